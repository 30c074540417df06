"""What a backup says about itself, written beside its dump on the server (`manifest.json`) and
carried inside the snapshot: the drill checks a restore against it.

The server makes it (`dump.sh`: the census from Postgres as JSON, the rest from the shell), so
this module is the one reader and the one definition of its shape: `parse` refuses a manifest
whose fields are missing or wrong, naming the field; `to_json` writes the same shape back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..errors import OpskitError

FORMAT = 1
#: what `dump.sh` names the files of one backup set
DUMP_FILE, SUM_FILE, MANIFEST_FILE, TAGS_FILE = "db.dump", "db.dump.sha256", "manifest.json", "tags"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: a release id or Alembic revision lands in a restic tag and a file name: plain words only
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class ManifestError(OpskitError, ValueError):
    """A manifest that is not one: names the field and what is wrong with it."""


@dataclass(frozen=True)
class Manifest:
    time: datetime  # when the dump's snapshot was taken (UTC, whole seconds)
    release: str  # the release the server ran (`current`), or "none"
    database: str
    revision: str | None  # Alembic's version_num(s), "+"-joined; None: no alembic_version table
    size: int  # bytes of the dump file
    sha256: str  # of the dump file
    rows: dict = field(default_factory=dict)  # "schema.table" -> row count, in the dump's snapshot
    server_version: str = ""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "time": format_time(self.time), "release": self.release,
                "database": self.database, "revision": self.revision, "server_version": self.server_version,
                "dump": {"file": DUMP_FILE, "format": "custom", "size": self.size, "sha256": self.sha256},
                "rows": dict(sorted(self.rows.items()))}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str | bytes) -> Manifest:
    """A manifest from its JSON; ManifestError naming every bad field (`dump.sha256: ...`)."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ManifestError("manifest: must be a JSON object")
    problems: list[str] = []

    def take(path: str, check, what: str, source=raw, optional=False):
        key = path.rsplit(".", 1)[-1]
        if key not in source:
            if optional:
                return None
            problems.append(f"{path}: is required")
            return None
        value = source[key]
        if optional and value is None:
            return None
        if not check(value):
            problems.append(f"{path}: must be {what}, not {_short(value)}")
            return None
        return value

    fmt = take("format", lambda v: v == FORMAT, f"{FORMAT}")
    time = take("time", lambda v: isinstance(v, str) and bool(_TIME.match(v)), "a UTC time like 2026-12-01T03:00:00Z")
    release = take("release", _is_word, "a release id (letters, digits, . _ + -)")
    database = take("database", lambda v: isinstance(v, str) and 0 < len(v) <= 63, "a database name")
    revision = take("revision", _is_word, "an Alembic revision or null", optional=True)
    version = take("server_version", lambda v: isinstance(v, str), "a string", optional=True) or ""
    dump = take("dump", lambda v: isinstance(v, dict), "an object")
    size = sha = None
    if dump is not None:
        size = take("dump.size", lambda v: _is_count(v) and v > 0, "a positive whole number of bytes", dump)
        sha = take("dump.sha256", lambda v: isinstance(v, str) and bool(_SHA256.match(v)),
                   "64 lowercase hex digits", dump)
        take("dump.file", lambda v: v == DUMP_FILE, repr(DUMP_FILE), dump)
    rows = take("rows", lambda v: isinstance(v, dict), "an object of table -> row count")
    if rows is not None:
        for table, count in rows.items():
            if not _is_count(count):
                problems.append(f"rows.{table}: must be a whole number >= 0, not {_short(count)}")
    if problems or fmt is None:
        raise ManifestError("manifest: " + "; ".join(problems))
    moment = datetime.strptime(time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return Manifest(moment, release, database, revision, size, sha, dict(rows), version)


def _is_word(value) -> bool:
    return isinstance(value, str) and bool(_WORD.match(value))


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
