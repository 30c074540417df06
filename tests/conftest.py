"""Fixtures shared by every tier: the real inventory.yaml, made independent of this checkout's
state (build contexts and secrets point into a temporary folder)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from opskit import ROOT, inventory
from opskit.secrets_store import SECRET_NAMES

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
        return inventory.parse(raw, name, base=tmp_path, environ=secrets_env if environ is None else environ)

    return make


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A copy of the templates (compose/, caddy/, postgres-init/) to break on purpose."""
    out = tmp_path / "templates"
    for folder in ("compose", "caddy", "postgres-init"):
        shutil.copytree(ROOT / folder, out / folder)
    return out


@pytest.fixture(scope="session")
def kit_images():
    """The offline image kit, built once (a no-op in seconds when it is already built)."""
    from opskit import kit
    from tests.integration.docker_engine import engine_available

    if not engine_available():
        pytest.skip("no Docker engine answers: run scripts/setup-docker.sh")
    kit.build_kit()
