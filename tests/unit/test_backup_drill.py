"""The restore drill: its steps, the verdict of each check, and the cleanup that runs whatever
failed. The server is a stand-in connection here (canned outputs); tests/integration runs it for real."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from opskit.backup import drill as drills
from opskit.backup import manifest as manifests
from opskit.backup import plan as plans
from opskit.backup import restic
from opskit.runner import Runner
from opskit.ssh import Completed

SHA = "ab" * 32
MANIFEST = manifests.Manifest(datetime(2026, 12, 1, 3, tzinfo=UTC), "rel-1", "job_agent", "3f2a", 1701, SHA,
                              {"public.alembic_version": 1, "public.runs": 100, "public.users": 7}, "15")


def settings() -> plans.Settings:
    a = restic.Access(restic.repository("sftp:u1@box.example:/restic"), "jobagent", "/srv/app/secrets/restic_password",
                      "/srv/app/secrets/restic_ssh_key", "/srv/app/secrets/restic_known_hosts")
    return plans.Settings("/srv/app/backups", a, "postgres", "job_agent", plans.psql_prefix("/srv/app"))


def drill(snapshot: str = "latest", drill_id: str = "d1") -> drills.Drill:
    return drills.Drill(settings(), snapshot, drill_id, "job_agent_ui", "job_agent_admin")


# -- the steps ------------------------------------------------------------------------------------------


def test_the_drill_restores_checks_and_always_ends_with_the_cleanup():
    d = drill()
    assert [name for name, _ in d.steps()] == ["restore", "manifest", "scratch", "pg_restore", "revision"]
    assert [s.title for s in d.cleanup()] == ["drop scratch database job_agent_drill_d1",
                                             "remove /srv/app/backups/.drill-d1"]
    assert len(d.plan()) == 7 and d.plan().steps[-2:] == d.cleanup()


def test_the_scratch_database_is_named_for_the_drill_and_quoted():
    d = drill(drill_id="x9")
    create = dict(d.steps())["scratch"].argv
    assert create[-1] == 'CREATE DATABASE "job_agent_drill_x9" OWNER "job_agent_admin" TEMPLATE template0'
    assert d.cleanup()[0].argv[-1] == 'DROP DATABASE IF EXISTS "job_agent_drill_x9" WITH (FORCE)'
    assert create[create.index("--username") + 1] == "postgres"


def test_pg_restore_reads_the_restored_dump_in_one_transaction_that_stops_at_the_first_error():
    argv = list(dict(drill().steps())["pg_restore"].argv)
    assert argv[3:5] == ["opskit-drill-pg-restore", "/srv/app/backups/.drill-d1/backup/db.dump"]
    assert {"--exit-on-error", "--single-transaction"} <= set(argv) and argv[-1] == "job_agent_drill_d1"


def test_the_restore_uses_restics_dump_of_this_stacks_snapshot():
    argv = list(dict(drill("0123abcd").steps())["restore"].argv)
    assert argv[-7:] == ["dump", "--host", "jobagent", "--path", "/backup", "0123abcd", "/backup"]


@pytest.mark.parametrize("snapshot, drill_id", [("latest; rm", "d1"), ("xyz", "d1"), ("latest", "D1"),
                                                ("latest", "a-b"), ("latest", "")])
def test_a_snapshot_or_drill_id_that_is_not_a_plain_word_is_refused(snapshot, drill_id):
    with pytest.raises(ValueError):
        drill(snapshot, drill_id)


def test_a_scratch_name_postgres_would_cut_short_is_refused():
    long = plans.Settings("/srv/app/backups", settings().access, "postgres", "d" * 50, ())
    with pytest.raises(ValueError, match="longer than 63 bytes"):
        drills.Drill(long, "latest", "abcdefghijklmnop", "ui", "admin")


# -- the verdicts ----------------------------------------------------------------------------------------


def test_a_restored_set_is_read_from_the_steps_output():
    output = f"opskit-sha256 {SHA}\nopskit-size 1701\nopskit-manifest\n{MANIFEST.to_json()}"
    assert drills.read_restored(output) == (SHA, 1701, MANIFEST)


def test_a_restored_set_without_its_manifest_is_a_failed_manifest_check():
    with pytest.raises(manifests.ManifestError):
        drills.read_restored(f"opskit-sha256 {SHA}\nopskit-size 1701\n")


@pytest.mark.parametrize("sha, size, ok, detail", [
    (SHA, 1701, True, ""),
    ("cd" * 32, 1701, False, "the restored dump's sha256 cdcdcdcdcdcd… is not the manifest's abababababab…"),
    (SHA, 1700, False, "the restored dump has 1700 bytes, the manifest says 1701"),
])
def test_the_dump_must_be_the_one_the_manifest_names(sha, size, ok, detail):
    got = drills.verify_dump(MANIFEST, sha, size)
    assert got.name == "sha256" and got.ok is ok and (ok or got.detail == detail)


def census(**rows_changes):
    rows = {**MANIFEST.rows, **rows_changes}
    return {k: v for k, v in rows.items() if v is not None}


def test_a_restore_that_matches_the_manifest_passes_every_check():
    got = drills.verify_census(MANIFEST, "3f2a", census(), {"connect": True, "denied": []})
    assert [(c.name, c.ok) for c in got] == [("revision", True), ("rows", True), ("ui_select", True)]


def test_another_revision_fails_the_revision_check():
    got = drills.verify_census(MANIFEST, "9e9e", census(), {"connect": True, "denied": []})[0]
    assert got == drills.CheckResult("revision", False, "restored revision 9e9e is not the manifest's 3f2a")


def test_every_table_whose_count_differs_is_named():
    got = drills.verify_census(MANIFEST, "3f2a", census(**{"public.runs": 99, "public.users": None,
                                                           "public.extra": 1}), {"connect": True, "denied": []})[1]
    assert not got.ok
    assert got.detail == ("public.runs: 99 restored, 100 in the manifest; public.users: missing restored, "
                          "7 in the manifest; public.extra: 1 restored, not in the manifest")


@pytest.mark.parametrize("ui, detail", [
    ({"connect": False, "denied": []}, "the UI role may not connect to the restored database"),
    ({"connect": True, "denied": ["public.runs"]}, "the UI role may not SELECT from public.runs"),
])
def test_a_ui_role_that_cannot_read_fails_the_ui_check(ui, detail):
    got = drills.verify_census(MANIFEST, "3f2a", census(), ui)[2]
    assert got == drills.CheckResult("ui_select", False, detail)


def test_the_census_output_is_read_from_its_two_lines():
    output = ('opskit-revision 3f2a\nopskit-census {"database" : "x", "revision" : "3f2a", "rows" : {"public.t" : 2}}\n'
              'opskit-ui {"connect" : true, "denied" : []}\n')
    assert drills.read_census(output) == ("3f2a", {"public.t": 2}, {"connect": True, "denied": []})
    with pytest.raises(ValueError):
        drills.read_census("opskit-revision 3f2a\n")


# -- running it: the cleanup always runs --------------------------------------------------------------


class Server:
    """A stand-in for the SSH connection: canned output per step, and one step made to fail."""

    def __init__(self, fail: str | None = None, outputs: dict | None = None):
        self.fail, self.outputs, self.ran = fail, outputs or {}, []

    def run(self, argv, stdin=None, timeout=None, on_line=None):
        command = " ".join(argv)
        self.ran.append(command)
        if self.fail and self.fail in command:
            return Completed(1, b"", b"pg_restore: error: could not execute query: boom\n")
        for key, text in self.outputs.items():
            if key in command:
                return Completed(0, text.encode(), b"")
        return Completed(0, b"", b"")


GOOD_OUTPUTS = {
    "opskit-drill-read": f"opskit-sha256 {SHA}\nopskit-size 1701\nopskit-manifest\n{MANIFEST.to_json()}",
    "-v ui=job_agent_ui": ("opskit-revision 3f2a\nopskit-census " + json.dumps({"revision": "3f2a", "rows": MANIFEST.rows})
                           + '\nopskit-ui {"connect": true, "denied": []}\n'),
}


def test_a_drill_whose_checks_all_pass_says_so():
    server = Server(outputs=GOOD_OUTPUTS)
    report = drills.run(Runner(server, out=io.StringIO()), drill())
    assert report.ok and report.failed is None, report.summary()
    assert [c.name for c in report.checks] == list(drills.CHECKS)
    assert report.summary().startswith("drill of snapshot latest: passed")
    assert json.loads(report.to_json())["ok"] is True


def test_a_failing_pg_restore_is_named_and_the_scratch_database_is_still_dropped():
    server = Server(fail="pg_restore", outputs=GOOD_OUTPUTS)
    report = drills.run(Runner(server, out=io.StringIO()), drill())
    assert not report.ok and report.failed.name == "pg_restore"
    assert report.failed.detail == "pg_restore: error: could not execute query: boom"
    assert "DROP DATABASE IF EXISTS" in server.ran[-2] and server.ran[-1].startswith("rm -rf -- /srv/app/backups/.drill-d1")
    assert report.checks[-1] == drills.CheckResult("cleanup", True)
    assert "FAILED at pg_restore" in report.summary()
    assert json.loads(report.to_json())["failed"] == "pg_restore"


def test_a_dump_that_is_not_the_manifests_stops_before_any_database_is_made():
    outputs = {**GOOD_OUTPUTS, "opskit-drill-read": GOOD_OUTPUTS["opskit-drill-read"].replace(SHA, "cd" * 32, 1)}
    server = Server(outputs=outputs)
    report = drills.run(Runner(server, out=io.StringIO()), drill())
    assert report.failed.name == "sha256"
    assert not any("CREATE DATABASE" in c for c in server.ran)
    assert "DROP DATABASE IF EXISTS" in server.ran[-2]


def test_a_failed_cleanup_fails_the_drill_and_says_what_was_left():
    server = Server(fail="DROP DATABASE", outputs=GOOD_OUTPUTS)
    report = drills.run(Runner(server, out=io.StringIO()), drill())
    assert not report.ok and report.failed.name == "cleanup"
    assert report.failed.detail.startswith("drop scratch database job_agent_drill_d1: ")
    assert server.ran[-1].startswith("rm -rf")  # the folder is removed even when the drop failed
