"""The rendered compose file on the real Compose v2: `docker compose config` accepts it for every
environment and resolves what we rely on (no secret interpolated, env files found)."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from opskit import hardening, prune, release_folder, render, rollout, smoke
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
    # no secret in what Compose makes of the file: secrets are files, named by their path
    for secret in env.secrets.values():
        assert secret.reveal() not in done.stdout
    assert {name: s["file"] for name, s in resolved["secrets"].items()} == {
        name: f"{env.remote_dir}/secrets/{name}" for names in render.SERVICE_SECRETS.values() for name in names}
    assert [s["source"] for s in resolved["services"]["redis"]["secrets"]] == ["redis_conf", "redis_password"]
    ports = resolved["services"]["postgres"]["ports"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in ports] == [
        (env.postgres.publish_host, str(env.postgres.publish_port), 5432)]
    assert "ports" not in resolved["services"]["redis"] and "ports" not in resolved["services"]["flower"]


def test_compose_reads_back_each_confinement_and_network(make_env, tmp_path):
    """What opskit/hardening.py decides is what Compose will give the engine (issue 13, 4 and 5)."""
    folder = release_folder.write(render.render(make_env("local")), tmp_path / "local")
    done = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=folder,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    for name, decision in hardening.SERVICES.items():
        svc = resolved["services"][name]
        assert (svc["user"], svc["read_only"], svc["pids_limit"]) == (decision.user, True, decision.pids_limit)
        assert svc["security_opt"] == ["no-new-privileges:true"] and svc["cap_drop"] == ["ALL"]
        assert svc.get("cap_add", []) == [cap.name for cap in decision.cap_add]
        assert svc.get("tmpfs", []) == [t.compose for t in decision.tmpfs]
        assert sorted(svc["networks"]) == hardening.networks_of(name)
    assert {name: bool(net.get("internal")) for name, net in resolved["networks"].items()} == {
        name: net.internal for name, net in hardening.NETWORKS.items()}


def test_the_replacement_finds_the_release_networks_and_services_in_what_compose_prints(make_env, tmp_path):
    """The side-by-side replacement runs its jobs one after another when a network is new: it reads
    the names from `docker compose config` (Compose 2.26 has no `config --networks`)."""
    env = make_env("local")
    folder = release_folder.write(render.render(env), tmp_path / "local")
    printed = subprocess.run(["docker", "compose", "config"], cwd=folder, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    names = subprocess.run(["awk", rollout.NETWORK_NAMES_AWK], input=printed.stdout, capture_output=True, text=True)
    assert names.returncode == 0, names.stderr
    assert sorted(names.stdout.split()) == sorted(f"{env.project}_{name}" for name in hardening.NETWORKS)
    # and the services whose jobs it starts (a rollback's release may have other services than today's)
    services = subprocess.run(["awk", rollout.SERVICE_NAMES_AWK], input=printed.stdout, capture_output=True,
                              text=True)
    assert services.returncode == 0, services.stderr
    assert sorted(services.stdout.split()) == sorted(smoke.expected_services(env))


def test_the_image_prune_reads_the_same_images_as_compose_from_the_rendered_file(make_env, tmp_path):
    """The prune reads a kept release's images from its `image:` lines, not `config --images`."""
    folder = release_folder.write(render.render(make_env("local")), tmp_path / "local")
    compose = subprocess.run(["docker", "compose", "config", "--images"], cwd=folder, capture_output=True, text=True)
    assert compose.returncode == 0, compose.stderr
    read = subprocess.run(["awk", prune.IMAGE_REFS_AWK, str(folder / "docker-compose.yml")], capture_output=True,
                          text=True)
    assert sorted(set(read.stdout.split())) == sorted(set(compose.stdout.split())) != []
