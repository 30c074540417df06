"""Load `inventory.yaml`: merge `defaults:` with one environment, validate everything up front,
resolve secrets by reference, and return typed, frozen objects.

Nothing downstream reads a raw dict. Every problem is collected with its key path
(`environments.production.domains.api: ...`) and raised at once as `InventoryError`. Loading
writes nothing and connects nowhere.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .. import ROOT
from ..errors import InventoryError
from .model import (APP_SERVICES, LANGUAGES, OFFICIAL_IMAGES, SSE, TLS, Build, Domains,  # noqa: F401
                    Environment, Logging, Postgres, Resources, Service, Smoke, Target, Vps, expand)
from ..values import shown
from . import yamlfile
from .parser import Parser, Where, merge, unknown
from .secrets import BACKUP_SECRET_NAMES, SECRET_NAMES, backup_secret_names, resolve_secrets  # noqa: F401

DEFAULT_PATH = ROOT / "inventory.yaml"


def load(environment: str = "local", path: Path | str | None = None, *, with_secrets: bool = True,
         environ=None) -> Environment:
    """Read, merge, validate and (unless `with_secrets=False`) resolve secrets for one environment.
    Raises `InventoryError` listing every problem."""
    path = Path(path) if path else DEFAULT_PATH
    raw = read(path)
    return parse(raw, environment, source=path.name, base=path.parent, with_secrets=with_secrets, environ=environ)


def read(path: Path):
    """The YAML document of an inventory file, read strictly (see `yamlfile`)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InventoryError([f"file not found: {path} (start from the repository's inventory.yaml: "
                              "README documents every key)"], str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError([f"cannot read {path}: {exc}"], str(path)) from None
    return yamlfile.read(text, path.name)


def environment_names(path: Path | str | None = None) -> list[str]:
    """The environments the file names; InventoryError when it names none (or is not an inventory)."""
    path = Path(path or DEFAULT_PATH)
    raw = read(path)
    envs = raw.get("environments") if isinstance(raw, dict) else None
    if not isinstance(envs, dict) or not envs:
        raise InventoryError(["environments: is required (a mapping of environment names, e.g. local, production)"],
                             path.name)
    return sorted(str(name) for name in envs)


def check(path: Path | str | None = None) -> list[str]:
    """Validate the whole file, every environment of it, and report every problem at once
    (InventoryError); the names of the environments when all is well. Secrets are not resolved."""
    path = Path(path or DEFAULT_PATH)
    names = environment_names(path)
    raw, problems = read(path), []
    for name in names:
        try:
            parse(raw, name, source=path.name, base=path.parent, with_secrets=False)
        except InventoryError as exc:
            problems += [p for p in exc.problems if p not in problems]
    if problems:
        raise InventoryError(problems, path.name)
    return names


def parse(raw, environment: str, *, source: str = "inventory.yaml", base: Path = ROOT,
          with_secrets: bool = True, environ=None) -> Environment:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise InventoryError(["the file must be a mapping with `defaults:` and `environments:`"], source)
    unknown(raw, {"version", "defaults", "environments"}, None, problems)
    if raw.get("version", 1) != 1:
        problems.append(f"version: {shown(raw.get('version'))} is not supported (expected 1)")
    envs = raw.get("environments")
    if not isinstance(envs, dict) or not envs:
        raise InventoryError(problems + ["environments: is required (a mapping of environment names, e.g. local, production)"], source)
    if environment not in envs:
        known = ", ".join(sorted(map(str, envs)))
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
        env = replace(env, secrets=resolve_secrets(env.name, env.secret_refs, env.secrets_file, where, environ,
                                                   backup_secret_names(env.backup)))
    return env
