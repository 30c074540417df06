"""The rendered compose file on the real Compose v2: `docker compose config` accepts it for every
environment and resolves what we rely on (no secret interpolated, env files found)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from opskit import release_folder, render
from tests.conftest import ENVIRONMENTS
pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_compose")]


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_compose_accepts_the_rendered_release(make_env, tmp_path, name):
    env = make_env(name)
    folder = release_folder.write(render.render(env), tmp_path / name)
    done = subprocess.run(["docker", "compose", "config", "--format", "yaml"], cwd=folder,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["name"] == env.project
    # the env file values reach the services; the command keeps the variable, not its value
    redis = resolved["services"]["redis"]
    assert redis["environment"]["REDIS_PASSWORD"] == env.secrets["redis_password"].reveal()
    assert "REDIS_PASSWORD" in redis["command"][-1]
    assert env.secrets["redis_password"].reveal() not in redis["command"][-1]
    ports = resolved["services"]["postgres"]["ports"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in ports] == [
        (env.postgres.publish_host, str(env.postgres.publish_port), 5432)]
    assert "ports" not in resolved["services"]["redis"] and "ports" not in resolved["services"]["flower"]
