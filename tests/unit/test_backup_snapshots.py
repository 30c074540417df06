"""`restic snapshots --json` read into what `invoke db.backups` lists, newest first."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from opskit.backup import snapshots
from opskit.errors import GatherError

# restic 0.14's shape (no summary), nanoseconds and a local offset as restic writes them
RESTIC_014 = [
    {"time": "2026-11-29T03:00:01.123456789+01:00", "tree": "t1", "paths": ["/backup"], "hostname": "jobagent",
     "username": "root", "tags": ["release=rel-a", "revision=3f2a", "size=1701"], "id": "a" * 64,
     "short_id": "aaaaaaaa"},
    {"time": "2026-11-30T03:00:00Z", "tree": "t2", "paths": ["/backup"], "hostname": "jobagent",
     "tags": ["release=rel-b", "revision=none", "size=2048"], "id": "b" * 64, "short_id": "bbbbbbbb"},
]


def test_snapshots_are_listed_newest_first_with_release_revision_and_size():
    got = snapshots.parse(json.dumps(RESTIC_014))
    assert [(s.short_id, s.release, s.revision, s.size) for s in got] == [
        ("bbbbbbbb", "rel-b", None, 2048), ("aaaaaaaa", "rel-a", "3f2a", 1701)]
    assert got[1].time == datetime(2026, 11, 29, 2, 0, 1, 123456, tzinfo=UTC)
    assert got[0].paths == ("/backup",) and got[0].host == "jobagent"


def test_a_newer_restics_summary_gives_the_size():
    item = {**RESTIC_014[0], "summary": {"total_bytes_processed": 99}, "tags": ["release=r"]}
    assert snapshots.parse(json.dumps([item]))[0].size == 99


def test_a_snapshot_without_our_tags_lists_unknowns():
    item = {k: v for k, v in RESTIC_014[0].items() if k not in ("tags", "short_id")}
    got = snapshots.parse(json.dumps([item]))[0]
    assert (got.release, got.revision, got.size, got.short_id) == (None, None, None, "a" * 8)
    assert "release ?" in got.row() and "revision ?" in got.row()


def test_the_table_names_each_snapshot_on_one_line():
    lines = snapshots.table(snapshots.parse(json.dumps(RESTIC_014))).splitlines()
    assert lines[0] == "bbbbbbbb  2026-11-30 03:00:00 UTC  release rel-b  revision ?  2.0 kB"
    assert lines[1].startswith("aaaaaaaa  2026-11-29 02:00:01 UTC  release rel-a  revision 3f2a")
    assert snapshots.table([]) == "no backups in the repository"


@pytest.mark.parametrize("text", ["Fatal: wrong password", "{}", '[{"id": "x"}]', '[{"time": "yesterday", "id": "x"}]'])
def test_what_is_not_restics_list_is_refused(text):
    with pytest.raises(GatherError):
        snapshots.parse(text)


def test_an_empty_repository_lists_nothing():
    assert snapshots.parse("[]") == [] and snapshots.parse("") == []
