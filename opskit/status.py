"""What runs on the server: the current release and each service's state, health and image age.
One SSH round trip; the parsing is pure."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

_MARK = "---images---"


@dataclass(frozen=True)
class ServiceState:
    service: str
    state: str
    health: str
    image: str
    image_age_days: float | None


def status_argv(remote_dir: str, project: str) -> list[str]:
    d = shlex.quote(remote_dir)
    script = f"""
echo "current=$(basename "$(readlink {d}/current 2>/dev/null)" 2>/dev/null)"
echo "now=$(date +%s)"
docker ps --all --filter label=com.docker.compose.project={shlex.quote(project)} --format '{{{{json .}}}}'
echo {_MARK}
ids=$(docker ps --all -q --filter label=com.docker.compose.project={shlex.quote(project)})
[ -n "$ids" ] && docker inspect --format '{{{{json .}}}}' $ids | while read -r c; do echo "$c"; done
"""
    return ["sh", "-c", script]


def parse_status(output: str) -> tuple[str | None, list[ServiceState]]:
    import datetime as dt

    head, _, details = output.partition(_MARK)
    current, now, states = None, None, []
    created = {}
    for line in details.splitlines():
        if line.strip().startswith("{"):
            c = json.loads(line)
            created[c["Id"][:12]] = (c.get("Created"), (c.get("State") or {}).get("Health", {}).get("Status", "-"))
    for line in head.splitlines():
        if line.startswith("current="):
            current = line.partition("=")[2].strip() or None
        elif line.startswith("now="):
            now = float(line.partition("=")[2] or 0)
        elif line.strip().startswith("{"):
            row = json.loads(line)
            labels = dict(item.split("=", 1) for item in row.get("Labels", "").split(",") if "=" in item)
            made, health = created.get(row.get("ID", "")[:12], (None, "-"))
            age = None
            if made and now:
                started = dt.datetime.fromisoformat(made[:26].rstrip("Z") + "+00:00" if "." in made else made)
                age = (now - started.timestamp()) / 86400
            states.append(ServiceState(labels.get("com.docker.compose.service", row.get("Names", "?")),
                                       row.get("State", "?"), health, row.get("Image", "?"), age))
    return current, sorted(states, key=lambda s: s.service)


def table(current: str | None, states: list[ServiceState]) -> str:
    lines = [f"current release: {current or 'none'}", f"{'service':10} {'state':10} {'health':10} {'container age':>13}  image"]
    for s in states:
        age = f"{s.image_age_days:.1f} d" if s.image_age_days is not None else "-"
        lines.append(f"{s.service:10} {s.state:10} {s.health:10} {age:>13}  {s.image}")
    return "\n".join(lines)
