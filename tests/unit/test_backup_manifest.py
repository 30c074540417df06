"""The backup manifest: JSON in, JSON out, and every bad field named."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from opskit.backup import manifest as m

GOOD = {"format": 1, "time": "2026-12-01T03:00:00Z", "release": "rel-1a2b3c",
        "dump": {"file": "db.dump", "format": "custom", "size": 1701, "sha256": "ab" * 32},
        "database": "job_agent", "server_version": "15.18", "revision": "3f2a9c1d0b7e",
        "rows": {"public.alembic_version": 1, "public.runs": 100000, "public.empty": 0}}


def text(**changes) -> str:
    raw = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        target, *keys = path.split("__")
        holder = raw
        for key in [target, *keys][:-1]:
            holder = holder[key]
        if value is ...:
            del holder[[target, *keys][-1]]
        else:
            holder[[target, *keys][-1]] = value
    return json.dumps(raw)


def test_a_manifest_reads_back_every_field():
    got = m.parse(text())
    assert got == m.Manifest(datetime(2026, 12, 1, 3, 0, tzinfo=UTC), "rel-1a2b3c", "job_agent",
                             "3f2a9c1d0b7e", 1701, "ab" * 32, GOOD["rows"], "15.18")


def test_json_out_is_json_in():
    got = m.parse(text())
    assert m.parse(got.to_json()) == got
    assert json.loads(got.to_json()) == {**GOOD, "rows": dict(sorted(GOOD["rows"].items()))}


def test_a_database_without_alembic_has_no_revision():
    assert m.parse(text(revision=None)).revision is None
    assert m.parse(text(revision=...)).revision is None


def test_the_shell_written_form_of_dump_sh_parses():
    # what dump.sh writes: Postgres's json_build_object spacing, merged after the shell's fields
    raw = ('{"format": 1, "time": "2026-12-01T06:54:14Z", "release": "r1", "dump": {"file": "db.dump", '
           f'"format": "custom", "size": 1701, "sha256": "{"4d" * 32}"}}, "database" : "d1", '
           '"server_version" : "15.18 (Debian 15.18-0+deb12u1)", "revision" : "abc", '
           '"rows" : { "public.alembic_version" : 1, "public.t" : 2 }}\n')
    got = m.parse(raw)
    assert (got.revision, got.rows, got.size) == ("abc", {"public.alembic_version": 1, "public.t": 2}, 1701)


@pytest.mark.parametrize("changes, message", [
    ({"dump__sha256": "xyz"}, "dump.sha256: must be 64 lowercase hex digits, not \"xyz\""),
    ({"dump__sha256": "AB" * 32}, "dump.sha256: must be 64 lowercase hex digits"),
    ({"dump__size": 0}, "dump.size: must be a positive whole number of bytes, not 0"),
    ({"dump__size": "12"}, "dump.size: must be a positive whole number of bytes, not \"12\""),
    ({"dump__size": True}, "dump.size: must be a positive whole number of bytes, not true"),
    ({"dump__file": "other.dump"}, "dump.file: must be 'db.dump'"),
    ({"time": "2026-12-01 03:00"}, "time: must be a UTC time like 2026-12-01T03:00:00Z"),
    ({"time": ...}, "time: is required"),
    ({"release": "a b"}, "release: must be a release id"),
    ({"revision": "x;rm"}, "revision: must be an Alembic revision or null"),
    ({"rows": []}, "rows: must be an object of table -> row count"),
    ({"rows": {"public.runs": -1}}, "rows.public.runs: must be a whole number >= 0, not -1"),
    ({"format": 2}, "format: must be 1, not 2"),
    ({"dump": ...}, "dump: is required"),
])
def test_a_bad_field_is_named(changes, message):
    with pytest.raises(m.ManifestError) as info:
        m.parse(text(**changes))
    assert message in str(info.value)


def test_every_problem_is_named_at_once():
    with pytest.raises(m.ManifestError) as info:
        m.parse(text(time=..., dump__sha256="no", rows={"t": "many"}))
    assert all(part in str(info.value) for part in ("time: is required", "dump.sha256:", "rows.t:"))


@pytest.mark.parametrize("raw", ["", "not json", "[1, 2]", "null"])
def test_what_is_not_a_manifest_object_is_refused(raw):
    with pytest.raises(m.ManifestError, match="^manifest: "):
        m.parse(raw)


def test_a_manifest_error_is_a_value_error_with_a_short_quote():
    with pytest.raises(ValueError) as info:
        m.parse(text(release="x" * 500))
    assert "x" * 100 not in str(info.value) and "..." in str(info.value)
