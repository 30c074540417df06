"""`invoke smoke`: the testinfra suite in `tests/smoke/`, pointed at one environment's server.

How to run it (`pytest_args`, `run`: a subprocess `python -m pytest tests/smoke --env ENV`), its
groups (`MARKERS`), and the services it expects. What it reads from the server is in
`opskit.facts`; thresholds and expected values come from the Environment (inventory.yaml).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from . import ROOT
from .layout import project_compose_argv

SUITE = "tests/smoke"

#: marker -> what the group checks (`-m containers`, `-m "http or celery"`)
MARKERS = {
    "host": "the server itself: sshd, listening ports, Docker and Compose, disk, inodes, clock",
    "provisioned": "what `invoke provision` makes, as it is in force: sshd -T, the loaded firewall, Docker's "
                   "daemon, unattended upgrades, swap, journald, time sync",
    "containers": "every service of the current release: running, healthy, restart policy, image, logs rotation",
    "exposure": "what is reachable from outside: published ports, Postgres on loopback, Redis password",
    "http": "Caddy and HTTPS: certificates, auth, headers, the running proxy config, SSE through Caddy",
    "postgres": "roles, grants, the UI role's limits, Alembic head, connections in use",
    "celery": "worker ping, beat scheduling, a task round trip",
    "logs": "logs of the running containers are free of the signatures of known incidents and of secret values",
    "backups": "the newest off-server backup is younger than backup.max_age, and the latest restore drill passed",
    "files": "release files: secret files the deploy user's in closed folders; no secret value in config files, "
             "the release outside secrets/, docker inspect or a process's argv",
}

#: the compose services every release runs besides the app services of the inventory
INFRA_SERVICES = ("postgres", "redis", "caddy")
#: services that may publish ports on the server, and which
PUBLISHERS = {"caddy": "80/443 for HTTPS", "postgres": "the loopback address of the inventory"}

# -- running the suite ----------------------------------------------------------------------------


def pytest_args(env_name: str, junit: str | Path | None = None, extra=()) -> list[str]:
    """Arguments for pytest (after `python -m pytest`) that run the smoke suite against `env_name`.

    `junit` writes JUnit XML for CI; `extra` passes through (`-k`, `-m`, `-x`, `-vv`...)."""
    args = [str(ROOT / SUITE), "--env", env_name, "--tb=short", "-o", "junit_suite_name=opskit-smoke"]
    if junit:
        args.append(f"--junitxml={junit}")
    args.extend(str(a) for a in extra)
    return args


def run(env_name: str, junit: str | Path | None = None, extra=()) -> int:
    """Run the smoke suite in a subprocess (output goes to this terminal); pytest's exit code."""
    argv = [sys.executable, "-m", "pytest", *pytest_args(env_name, junit, extra)]
    return subprocess.run(argv, cwd=ROOT).returncode


def rerun_hint(env_name: str) -> str:
    """The command (run in the repository) that shows the failures of the last run in full."""
    python = Path(sys.executable)
    try:
        python = python.relative_to(ROOT)
    except ValueError:
        python = Path(python.name)
    return f"{python} -m pytest {SUITE} --env {env_name} --lf -vv"


# -- names ----------------------------------------------------------------------------------------


def expected_services(env) -> tuple[str, ...]:
    """Every compose service of a release of `env` (app services from the inventory, then infra)."""
    return tuple(sorted(env.services)) + INFRA_SERVICES


def secret_files(env) -> tuple[str, ...]:
    """The names of the release's secret files (`secrets/<name>`, mounted at /run/secrets/<name>)."""
    from .inventory.secrets import backup_secret_names
    from .render import SERVICE_SECRETS

    names = {name for names in SERVICE_SECRETS.values() for name in names}
    names |= set(backup_secret_names(env.backup))  # restic's, mounted by its own container only
    return tuple(sorted(names))


def compose_hint(env, *args: str) -> str:
    """A compose command to run on the server (needs no file: the project is found by name)."""
    return shlex.join(project_compose_argv(env.project, *args))
