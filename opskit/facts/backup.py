"""The backups as the server sees them: the off-server snapshots (`restic snapshots`, run in
restic's container as a backup would) and the latest drill's record (`db.restore` writes it)."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from ..backup import restic, settings, snapshots
from ..backup.drill import RECORD
from .base import Fact, Output, read

_RECORD = 'f=$1; [ -e "$f" ] || exit 0; cat -- "$f"'


@dataclass(frozen=True)
class DrillRecord:
    time: str | None
    snapshot: str
    ok: bool
    failed: str | None
    detail: str


def parse_record(text: str) -> DrillRecord | None:
    """None when no drill ever ran; a record that does not parse is a failed drill, said so."""
    if not text.strip():
        return None
    try:
        raw = json.loads(text)
        failed = next((c for c in raw.get("checks", ()) if not c.get("ok")), None)
        return DrillRecord(raw.get("time"), str(raw["snapshot"]), raw.get("ok") is True, raw.get("failed"),
                           str(failed.get("detail", "")) if failed else "")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return DrillRecord(None, "?", False, "record", f"{RECORD} is not a drill's record ({exc})")


def snapshot_list(env) -> Fact:
    access = settings.access(env)
    return Fact("backup_snapshots", tuple(restic.run_argv(access, *restic.snapshots_args(access))),
                lambda out: snapshots.parse(out.text))


def drill_record(env) -> Fact:
    path = posixpath.join(settings.settings(env).root, RECORD)
    return Fact("backup_drill", ("sh", "-c", _RECORD, "opskit-drill-record", path),
                lambda out: parse_record(out.text))


def gather(connection, env) -> tuple[list, DrillRecord | None]:
    """(snapshots newest first, the latest drill's record or None)."""
    found = read(connection, snapshot_list(env), what="the backup repository's snapshots",
                 more=f"invoke db.backups -e {env.name}", timeout=120)
    return found, read(connection, drill_record(env), what="the latest drill's record", timeout=30)
