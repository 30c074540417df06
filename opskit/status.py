"""What runs on the server: the current release and each service's state, health and image age.
One SSH round trip; the parsing is pure."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import datetime

_MARK = "---images---"


@dataclass(frozen=True)
class ServiceState:
    service: str
    state: str
    health: str
    image: str
    image_age_days: float | None


def status_argv(remote_dir: str, project: str) -> list[str]:
    d, p = shlex.quote(remote_dir), shlex.quote(project)
    script = f"""
echo "current=$(basename "$(readlink {d}/current 2>/dev/null)" 2>/dev/null)"
echo "now=$(date +%s)"
docker ps --all --filter label=com.docker.compose.project={p} --filter label=com.docker.compose.oneoff=False \\
  --format '{{{{json .}}}}'
echo {_MARK}
docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}} {{{{.CreatedAt}}}}'
"""
    return ["sh", "-c", script]


def _health(status: str) -> str:
    for word in ("healthy", "unhealthy", "health: starting"):
        if f"({word})" in status:
            return word.replace("health: ", "")
    return "-"


def _created(text: str) -> float | None:
    """`2026-11-23 15:22:01 +0000 UTC` -> unix time."""
    try:
        return datetime.strptime(" ".join(text.split()[:3]), "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        return None


def parse_status(output: str) -> tuple[str | None, list[ServiceState]]:
    head, _, image_lines = output.partition(_MARK)
    current, now, rows = None, 0.0, []
    for line in head.splitlines():
        if line.startswith("current="):
            current = line.partition("=")[2].strip() or None
        elif line.startswith("now="):
            now = float(line.partition("=")[2] or 0)
        elif line.startswith("{"):
            rows.append(json.loads(line))
    created = {}
    for line in image_lines.splitlines():
        ref, _, when = line.partition(" ")
        created[ref] = _created(when)
    states = []
    for row in rows:
        labels = dict(kv.split("=", 1) for kv in row.get("Labels", "").split(",") if "=" in kv)
        made = created.get(row.get("Image", ""))
        states.append(ServiceState(labels.get("com.docker.compose.service", row.get("Names", "?")),
                                   row.get("State", "?"), _health(row.get("Status", "")), row.get("Image", "?"),
                                   (now - made) / 86400 if made and now else None))
    return current, sorted(states, key=lambda s: s.service)


def table(current: str | None, states: list[ServiceState]) -> str:
    lines = [f"current release: {current or 'none'}",
             f"{'service':10} {'state':10} {'health':10} {'image age':>10}  image"]
    for s in states:
        age = f"{s.image_age_days:.1f} d" if s.image_age_days is not None else "-"
        lines.append(f"{s.service:10} {s.state:10} {s.health:10} {age:>10}  {s.image}")
    return "\n".join(lines)
