"""Whether a Docker engine and Compose v2 answer here (tests skip with a reason when not)."""

from __future__ import annotations

import functools
import subprocess


@functools.lru_cache(maxsize=None)
def engine_available() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=None)
def compose_available() -> bool:
    if not engine_available():
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20).returncode == 0
