"""Load `inventory.yaml`: merge `defaults:` with one environment, validate everything up front,
resolve secrets by reference, and return typed, frozen objects.

Nothing downstream reads a raw dict. Every problem is collected with its key path
(`environments.production.domains.api: ...`) and raised at once as `InventoryError`. Loading
writes nothing and connects nowhere.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import yaml

from .. import ROOT
from ..errors import InventoryError
from .model import (APP_SERVICES, LANGUAGES, OFFICIAL_IMAGES, SSE, TLS, Build, Domains,  # noqa: F401
                    Environment, Logging, Postgres, Resources, Service, Smoke, Target, Vps, expand)
from .parser import Parser, Where, merge, unknown
from .secrets import SECRET_NAMES, resolve_secrets  # noqa: F401

DEFAULT_PATH = ROOT / "inventory.yaml"


def load(environment: str = "local", path: Path | str | None = None, *, with_secrets: bool = True,
         environ=None) -> Environment:
    """Read, merge, validate and (unless `with_secrets=False`) resolve secrets for one environment.
    Raises `InventoryError` listing every problem."""
    path = Path(path) if path else DEFAULT_PATH
    raw = read(path)
    return parse(raw, environment, source=path.name, base=path.parent, with_secrets=with_secrets, environ=environ)


def read(path: Path):
    """The YAML document of an inventory file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InventoryError([f"file not found: {path} (start from the repository's inventory.yaml: every key is documented there and in README)"], str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InventoryError([f"not valid YAML: {exc}"], path.name) from None


def environment_names(path: Path | str | None = None) -> list[str]:
    raw = yaml.safe_load(Path(path or DEFAULT_PATH).read_text()) or {}
    envs = raw.get("environments") if isinstance(raw, dict) else None
    return sorted(envs) if isinstance(envs, dict) else []


def parse(raw, environment: str, *, source: str = "inventory.yaml", base: Path = ROOT,
          with_secrets: bool = True, environ=None) -> Environment:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise InventoryError(["the file must be a mapping with `defaults:` and `environments:`"], source)
    unknown(raw, {"version", "defaults", "environments"}, None, problems)
    if raw.get("version", 1) != 1:
        problems.append(f"version: {raw.get('version')!r} is not supported (expected 1)")
    envs = raw.get("environments")
    if not isinstance(envs, dict) or not envs:
        raise InventoryError(problems + ["environments: is required (a mapping of environment names, e.g. local, production)"], source)
    if environment not in envs:
        known = ", ".join(sorted(envs))
        raise InventoryError(problems + [f"environments.{environment}: no such environment (known: {known})"], source)
    defaults = raw.get("defaults") or {}
    env_raw = envs[environment] or {}
    for name, section in (("defaults", defaults), (f"environments.{environment}", env_raw)):
        if not isinstance(section, dict):
            problems.append(f"{name}: expected a mapping, got {type(section).__name__}")
    if problems:
        raise InventoryError(problems, source)
    where = Where(environment, env_raw)
    env = Parser(merge(defaults, env_raw), where, problems, base, environment).environment()
    if problems:
        raise InventoryError(problems, source)
    if with_secrets:
        env = replace(env, secrets=resolve_secrets(env.name, env.secret_refs, env.secrets_file, where, environ))
    return env
