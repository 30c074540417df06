"""Whether a Docker engine and Compose v2 answer here, asked once per session with a generous
timeout, and what a test does when they do not.

`require()` is for fixtures (`docker_engine`, `docker_compose` in tests/conftest.py): it FAILS,
saying what is missing, when the engine should be there (CI is set, or DOCKER_HOST names one, or
its socket exists), and skips otherwise (a machine with no Docker at all), which the skip gate
(tests/skipgate.py) then reports as a test that did not run. Nothing is decided at import time:
a slow first `docker info` (an engine still starting) costs time, never a silently skipped module.
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass

import pytest

#: seconds for `docker info` to answer: an engine under load (a CI build beside it) can be slow
TIMEOUT_S = 120
SETUP_HINT = "run `sudo bash scripts/setup-docker.sh` (Debian) to install and start Docker with Compose v2"
SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True)
class Engine:
    answers: bool
    compose: bool
    detail: str  # why not, when it does not answer


def _run(argv: list[str]) -> tuple[bool, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    except FileNotFoundError:
        return False, f"`{argv[0]}` is not installed"
    except subprocess.TimeoutExpired:
        return False, f"`{' '.join(argv)}` did not answer within {TIMEOUT_S} s"
    if done.returncode != 0:
        return False, f"`{' '.join(argv)}` exited {done.returncode}: {(done.stderr or done.stdout).strip()[-500:]}"
    return True, ""


@functools.lru_cache(maxsize=None)
def probe() -> Engine:
    """One look at the engine for the whole session."""
    answers, detail = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
    if not answers:
        return Engine(False, False, detail)
    compose, detail = _run(["docker", "compose", "version"])
    return Engine(True, compose, detail)


def is_expected() -> bool:
    """An engine should answer: in CI, or where DOCKER_HOST or the engine's socket says there is one."""
    ci = os.environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or bool(os.environ.get("DOCKER_HOST")) or os.path.exists(SOCKET)


def require(compose: bool = False) -> None:
    """Return when the engine (and, with `compose`, Compose v2) answers; fail when it should; skip
    (reported by the skip gate) on a machine without Docker."""
    engine = probe()
    if engine.answers and (engine.compose or not compose):
        return
    what = "no Docker engine answers" if not engine.answers else "`docker compose` (v2) does not answer"
    message = f"{what}: {engine.detail}; {SETUP_HINT}"
    if is_expected():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
