"""Read-only probes of the server, and pure parsers of their output.

One SSH round trip (`probe_argv`) tells the deploy everything it plans from: Docker and Compose
versions, free disk, the current release, the releases on disk, the lock, and every image's layers.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from .ship import server_layers

_INSPECT_MARK = "---inspect---"


@dataclass(frozen=True)
class Lock:
    holder: str
    since: float  # unix time
    release: str
    pid: int | None = None

    def describe(self) -> str:
        return f"{self.holder} since {self.since:.0f} (release {self.release})"


@dataclass(frozen=True)
class ServerFacts:
    docker: str | None
    compose: str | None
    disk_free_mb: int | None
    current: str | None  # release id the `current` link points at
    releases: tuple = ()  # release ids on disk, oldest first
    lock: Lock | None = None
    images: frozenset = frozenset()  # "repo:tag" references present
    layers: frozenset = field(default=frozenset(), repr=False)  # chain IDs of every layer present
    now: float = 0.0  # the server's clock, for lock ages


def probe_argv(remote_dir: str) -> list[str]:
    """One shell program on the server that prints what the planner needs. Reads only."""
    d = shlex.quote(remote_dir)
    script = f"""
d={d}
echo "docker=$(docker version --format '{{{{.Server.Version}}}}' 2>/dev/null)"
echo "compose=$(docker compose version --short 2>/dev/null)"
p=$d; while [ ! -d "$p" ]; do p=$(dirname "$p"); done
echo "disk_free_kb=$(df -Pk "$p" | awk 'NR==2 {{print $4}}')"
echo "current=$(basename "$(readlink "$d/current" 2>/dev/null)" 2>/dev/null)"
echo "releases=$(ls -1tr "$d/releases" 2>/dev/null | grep -v '\\.' | tr '\\n' ' ')"
echo "lock=$(cat "$d/deploy.lock/info" 2>/dev/null | tr -d '\\n')"
echo "now=$(date +%s)"
echo "images=$(docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}}' 2>/dev/null | tr '\\n' ' ')"
echo {_INSPECT_MARK}
ids=$(docker image ls -q 2>/dev/null | sort -u)
if [ -n "$ids" ]; then docker image inspect $ids; else echo '[]'; fi
"""
    return ["sh", "-c", script]


def parse_probe(output: str) -> ServerFacts:
    head, _, inspect = output.partition(_INSPECT_MARK)
    kv = {}
    for line in head.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            kv[key.strip()] = value.strip()
    lock = None
    if kv.get("lock"):
        try:
            raw = json.loads(kv["lock"])
            lock = Lock(raw.get("holder", "?"), float(raw.get("since", 0)), raw.get("release", "?"), raw.get("pid"))
        except (ValueError, TypeError):
            lock = Lock("unreadable lock file", 0.0, "?")
    disk = kv.get("disk_free_kb")
    return ServerFacts(
        docker=kv.get("docker") or None,
        compose=kv.get("compose") or None,
        disk_free_mb=int(disk) // 1024 if disk and disk.isdigit() else None,
        current=kv.get("current") or None,
        releases=tuple(kv.get("releases", "").split()),
        lock=lock,
        images=frozenset(kv.get("images", "").split()),
        layers=server_layers(inspect.strip() or "[]"),
        now=float(kv["now"]) if kv.get("now", "").isdigit() else 0.0,
    )
