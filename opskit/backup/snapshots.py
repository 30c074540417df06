"""`restic snapshots --json` -> what `invoke db.backups` lists: time, release, revision, size,
newest first. Pure.

restic 0.14 records no size in a snapshot (its `summary` arrived in 0.17): the backup tags each
snapshot `size=<dump bytes>`, and a newer restic's summary is used when there is one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import GatherError

# restic writes nanoseconds; Python reads at most microseconds
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime
    host: str
    paths: tuple
    tags: tuple
    release: str | None
    revision: str | None
    size: int | None

    def row(self) -> str:
        size = _size(self.size) if self.size is not None else "size ?"
        return (f"{self.short_id}  {self.time:%Y-%m-%d %H:%M:%S} UTC  release {self.release or '?'}  "
                f"revision {self.revision or '?'}  {size}")


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def parse_time(text: str) -> datetime:
    """restic's RFC 3339 time (nanoseconds, any offset) as an aware UTC datetime."""
    moment = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("Z", "+00:00")))
    return moment.astimezone(UTC)


def parse(text: str) -> list[Snapshot]:
    """The snapshots, newest first. GatherError when restic's output is not its snapshot list."""
    try:
        raw = json.loads(text or "[]")
    except ValueError as exc:
        raise GatherError(f"restic snapshots --json printed no JSON list ({exc})") from None
    if not isinstance(raw, list):
        raise GatherError("restic snapshots --json printed no JSON list")
    out = []
    for i, item in enumerate(raw):
        try:
            tags = tuple(item.get("tags") or ())
            tagged = dict(t.split("=", 1) for t in tags if "=" in t)
            summary = item.get("summary") or {}
            size = summary.get("total_bytes_processed")
            if size is None and tagged.get("size", "").isdigit():
                size = int(tagged["size"])
            revision = tagged.get("revision")
            out.append(Snapshot(item["id"], item.get("short_id") or item["id"][:8], parse_time(item["time"]),
                                item.get("hostname", ""), tuple(item.get("paths") or ()), tags,
                                tagged.get("release"), None if revision in (None, "none") else revision, size))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GatherError(f"restic snapshot #{i} is not one ({exc.__class__.__name__}: {exc})") from None
    return sorted(out, key=lambda s: s.time, reverse=True)


def table(snapshots: list[Snapshot]) -> str:
    if not snapshots:
        return "no backups in the repository"
    return "\n".join(s.row() for s in snapshots)
