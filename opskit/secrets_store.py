"""Resolve secrets given by reference: `env:NAME` (an environment variable) or `file:KEY`
(a key of a YAML secrets file kept outside git). Values never pass through the inventory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from . import values
from .errors import SecretError
from .runner import write_local
from .secrets import Secret, generate
from .ssh import expand

#: Every secret the stack needs, and what it is for (shown when one is missing).
SECRET_NAMES = {
    "postgres_admin_password": "password of the admin role (owns the schema, runs Alembic; API and Celery use it)",
    "postgres_ui_password": "password of the UI role (the frontend's read/write-rows-only role)",
    "redis_password": "Redis requirepass (broker, results, SSE pub/sub)",
    "api_key": "the API key the frontend sends as X-API-Key",
    "flower_password": "Flower basic-auth password (only its bcrypt hash reaches the Caddyfile)",
    "app_secret_key": "the API's signing secret",
    "better_auth_secret": "the frontend's Better Auth secret",
}


def resolve_secrets(environment: str, refs: dict, secrets_file, generate_missing: bool, base: Path,
                    where, environ=None) -> dict[str, Secret]:
    """Return {name: Secret} for every name in SECRET_NAMES, or raise SecretError naming each gap."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    file_path = expand(secrets_file, base) if secrets_file else None
    if file_path and generate_missing:
        _generate_missing(file_path, refs)
    file_values = _read_file(file_path, where, problems) if file_path else None

    out: dict[str, Secret] = {}
    for name in SECRET_NAMES:
        ref = refs.get(name)
        key = where("secrets", name)
        if ref is None:
            problems.append(f"{where.env('secrets', name)}: is required ({SECRET_NAMES[name]}); "
                            f"give a reference such as env:OPSKIT_{name.upper()} or file:{name}")
            continue
        kind, _, ref_name = str(ref).partition(":")
        if kind == "env":
            try:
                values.env_var_name(ref_name)
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
                continue
            value = environ.get(ref_name)
            if not value:
                problems.append(f"{key}: environment variable {ref_name} is not set "
                                f"({SECRET_NAMES[name]}); export it, or use file:{name} with a secrets file")
                continue
        elif kind == "file" and ref_name:
            if file_values is None:
                if not file_path:
                    problems.append(f"{key}: refers to the secrets file, but no secrets_file is set for "
                                    f"environment {environment}")
                continue
            value = file_values.get(ref_name)
            if not isinstance(value, str) or not value:
                problems.append(f"{key}: key {ref_name!r} is missing from {file_path} ({SECRET_NAMES[name]})")
                continue
        else:
            problems.append(f"{key}: {ref!r} is not a secret reference (expected env:VARIABLE or file:KEY; "
                            "never the secret itself)")
            continue
        out[name] = Secret(value, name)
    if problems:
        raise SecretError(problems)
    return out


def _read_file(path: Path, where, problems) -> dict | None:
    if not path.is_file():
        problems.append(f"{where('secrets_file')}: {path} does not exist (create it with mode 0600, "
                        "outside git, as `key: value` lines)")
        return None
    if _tracked_or_unignored(path):
        problems.append(f"{where('secrets_file')}: {path} is inside the git work tree and not ignored; "
                        "move it outside the repository or git-ignore it")
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        problems.append(f"{where('secrets_file')}: {path} is not valid YAML ({exc.__class__.__name__})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{where('secrets_file')}: {path} must be a mapping of key: value")
        return None
    return {str(k): (str(v) if v is not None else None) for k, v in data.items()}


def _tracked_or_unignored(path: Path) -> bool:
    """True when git would commit this file (it is in a work tree and not ignored)."""
    try:
        top = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if top.returncode != 0:
        return False
    ignored = subprocess.run(["git", "-C", str(path.parent), "check-ignore", "-q", "--no-index", str(path)],
                             capture_output=True, timeout=10)
    return ignored.returncode != 0


def _generate_missing(path: Path, refs: dict) -> None:
    """For the simulated VPS only: create random values for file: references that have none."""
    current = {}
    if path.is_file():
        current = yaml.safe_load(path.read_text()) or {}
    wanted = [ref.partition(":")[2] for ref in refs.values() if str(ref).startswith("file:")]
    missing = [k for k in wanted if not current.get(k)]
    if not missing:
        return
    current.update({k: generate() for k in missing})
    text = "# Generated by opskit for the simulated VPS. Never commit; delete to rotate.\n"
    text += yaml.safe_dump(dict(sorted(current.items())), default_flow_style=False)
    write_local(path, text.encode(), 0o600)
