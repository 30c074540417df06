"""Fixtures shared by every tier: the real inventory.yaml, made independent of this checkout's
state (build contexts and secrets point into a temporary folder)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from opskit import ROOT, inventory
from opskit.inventory import SECRET_NAMES
from opskit.runner import Runner
from opskit.sim.secrets import plan_secrets

# the skip gate (a skip not on tests/skips-allowed.txt fails the session; tests/smoke/ exempt), and
# pytester, which tests/unit/test_skipgate.py uses to run the gate on sample suites
pytest_plugins = ["tests.skipgate", "pytester"]

ENVIRONMENTS = ("local", "staging", "production")


@pytest.fixture(scope="session")
def inventory_raw() -> dict:
    return yaml.safe_load((ROOT / "inventory.yaml").read_text())


@pytest.fixture
def contexts(tmp_path) -> dict[str, Path]:
    """Two tiny build contexts, so render tests do not depend on the sample app's files."""
    out = {}
    for name in ("api", "frontend"):
        folder = tmp_path / "ctx" / name
        folder.mkdir(parents=True)
        (folder / "Dockerfile").write_text(f"FROM scratch\nLABEL name={name}\n")
        out[name] = folder
    return out


@pytest.fixture
def secrets_env() -> dict[str, str]:
    """Values for the env: references of staging/production, as a CI secret store would give."""
    return {f"OPSKIT_{name.upper()}": f"test-{name}-value" for name in SECRET_NAMES}


@pytest.fixture
def make_env(inventory_raw, contexts, tmp_path, secrets_env):
    """Build an Environment from the real inventory with optional edits: make_env("production", edit)."""

    def make(name="local", edit=None, environ=None):
        raw = copy.deepcopy(inventory_raw)
        for build, folder in contexts.items():
            raw["defaults"]["builds"][build]["context"] = str(folder)
        secrets_file = tmp_path / "secrets" / f"{name}.yaml"
        if name == "staging":
            secrets_file.parent.mkdir(exist_ok=True)
            secrets_file.write_text(yaml.safe_dump({k: f"file-{k}" for k in SECRET_NAMES}))
            secrets_file.chmod(0o600)
        if "secrets_file" in (raw["environments"][name] or {}):
            raw["environments"][name]["secrets_file"] = str(secrets_file)
        if edit:
            edit(raw)
        environ = secrets_env if environ is None else environ
        bare = inventory.parse(raw, name, base=tmp_path, with_secrets=False)
        Runner().run(plan_secrets(bare))  # the simulated VPS generates its own, as `deploy -e local` does
        return inventory.parse(raw, name, base=tmp_path, environ=environ)

    return make


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A copy of the templates (compose/, caddy/, postgres-init/) to break on purpose."""
    out = tmp_path / "templates"
    for folder in ("compose", "caddy", "postgres-init"):
        shutil.copytree(ROOT / folder, out / folder)
    return out


@pytest.fixture(scope="session")
def docker_engine():
    """A Docker engine answers; fails when it should (CI, a socket, DOCKER_HOST), never skips there."""
    from tests.integration import docker_engine as engine

    engine.require()


@pytest.fixture(scope="session")
def docker_compose():
    """A Docker engine with Compose v2 answers (fails like `docker_engine`)."""
    from tests.integration import docker_engine as engine

    engine.require(compose=True)


@pytest.fixture(scope="session")
def kit_images(docker_engine):
    """The offline image kit, built once (a no-op in seconds when it is already built)."""
    from opskit.sim import kit

    kit.build_kit()
