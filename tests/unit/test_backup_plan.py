"""The backup plan: its steps in order, the files it writes and their modes, and dump.sh's promise
that a failure leaves nothing named like a good set (run here with a stand-in for psql, the one
part of the server this tier has not got)."""

from __future__ import annotations

import hashlib
import io
import stat
import subprocess
from pathlib import Path

import pytest

from opskit.backup import manifest as manifests
from opskit.backup import plan as plans
from opskit.backup import restic
from opskit.runner import Runner
from opskit.secrets import Secret
from opskit.steps import SERVER, Plan, Run, WriteFile

PASSWORD = "restic-pw-5c2e9a17-never-printed"
SSH_KEY = "ssh-key-text-0b7e41d2-never-printed"
STAMP = "20261201T030000Z"


def access() -> restic.Access:
    return restic.Access(restic.repository("sftp:u1@box.example:/restic"), "jobagent",
                         "/srv/app/secrets/restic_password", "/srv/app/secrets/restic_ssh_key",
                         "/srv/app/secrets/restic_known_hosts")


def settings(**kwargs) -> plans.Settings:
    return plans.Settings(plans.folder("/srv/app"), access(), "postgres", "job_agent", plans.psql_prefix("/srv/app"),
                          **kwargs)


def test_the_backup_runs_dump_then_restic_then_retention_then_local_upkeep():
    plan = plans.backup_plan(settings(keep_daily=7, keep_weekly=4), STAMP, "rel-1")
    assert [s.title for s in plan] == [
        f"dump job_agent to /srv/app/backups/{STAMP} (pg_dump -Fc, manifest, sha256)",
        "restic repository sftp:u1@box.example:/restic ready (made when missing)",
        f"restic backup {STAMP} off the server",
        "restic forget --prune (keep daily 7, weekly 4)",
        "keep the newest 2 sets on the server"]
    assert all(isinstance(s, Run) and s.on == SERVER for s in plan)


def test_a_deploy_reaches_postgres_through_its_own_release_folder():
    assert plans.psql_prefix("/srv/app", "/srv/app/releases/r2")[:4] == (
        "docker", "compose", "--project-directory", "/srv/app/releases/r2")


def test_sets_live_beside_the_releases_never_inside_one():
    s = settings()
    assert s.root == "/srv/app/backups" and not s.root.startswith("/srv/app/releases")
    assert s.set_folder(STAMP) == f"/srv/app/backups/{STAMP}"


def test_the_dump_runs_psql_in_the_postgres_container_as_the_superuser_role():
    step = plans.dump_step(settings(), STAMP, "rel-1")
    argv = list(step.argv)
    assert argv[:2] == ["sh", "-c"] and argv[3:9] == ["opskit-backup-dump", "/srv/app/backups", STAMP, "rel-1",
                                                       "postgres", "job_agent"]
    assert argv[9:] == ["docker", "compose", "--project-directory", "/srv/app/current", "-f",
                        "/srv/app/current/docker-compose.yml", "exec", "-T", "postgres"]
    sql = step.stdin.decode()
    # one snapshot for the dump and its census; custom format; the transaction ends after the census
    assert "pg_export_snapshot()" in sql and '--snapshot="$OPSKIT_SNAPSHOT"' in sql and "--format=custom" in sql
    assert sql.index("pg_dump") < sql.index("opskit-census") < sql.rindex("COMMIT;")


def test_the_set_is_sent_read_only_at_one_fixed_path_with_its_tags():
    argv = list(plans.send_step(settings(), STAMP).argv)
    assert f"type=bind,source=/srv/app/backups/{STAMP},target=/backup,readonly" in argv
    assert argv[argv.index("/backup/tags") - 1].startswith("while IFS= read -r tag")
    assert argv[-4:] == ["backup", "--host", "jobagent", "/backup"]


@pytest.mark.parametrize("stamp, release", [("2026-12-01", "r"), (STAMP, "a b"), (STAMP, "../x"), (STAMP, "")])
def test_a_stamp_or_release_that_is_not_a_plain_word_is_refused(stamp, release):
    with pytest.raises(ValueError):
        plans.dump_step(settings(), stamp, release)


def test_settings_refuse_a_relative_folder_and_keeping_no_local_set():
    with pytest.raises(ValueError):
        plans.Settings("backups", access(), "postgres", "db", ())
    with pytest.raises(ValueError):
        settings(keep_local=0)


def test_credentials_are_written_0600_and_never_printed():
    steps = plans.credential_steps(access(), Secret(PASSWORD, "restic_password"), Secret(SSH_KEY, "restic_ssh_key"),
                                   "box.example ssh-ed25519 AAAAC3Nza\n")
    assert [(s.path, s.mode) for s in steps] == [("/srv/app/secrets/restic_password", 0o600),
                                                 ("/srv/app/secrets/restic_ssh_key", 0o600),
                                                 ("/srv/app/secrets/restic_known_hosts", 0o600)]
    assert all(isinstance(s, WriteFile) for s in steps)
    assert isinstance(steps[0].content, Secret) and isinstance(steps[1].content, Secret)
    out = io.StringIO()
    Runner(dry_run=True, out=out).run(Plan("creds", steps + list(plans.backup_plan(settings(), STAMP, "r1"))))
    assert PASSWORD not in out.getvalue() and SSH_KEY not in out.getvalue()
    assert "secret content" in out.getvalue()


def test_sftp_credentials_need_the_key_and_the_pinned_host_key():
    with pytest.raises(ValueError):
        plans.credential_steps(access(), Secret(PASSWORD), None, "box ssh-ed25519 AAAA\n")
    with pytest.raises(ValueError):
        plans.credential_steps(access(), Secret(PASSWORD), Secret(SSH_KEY), "")


# -- dump.sh, with a stand-in for psql --------------------------------------------------------------

CENSUS = 'opskit-census {"database" : "job_agent", "server_version" : "15", "revision" : "abc", "rows" : {"public.t" : 2}}'
GOOD = f"""cat >/dev/null; printf 'PGDMP-fake-dump'
echo 'opskit-dump-exit 0' >&2; echo 'opskit-revision abc' >&2; echo '{CENSUS}' >&2"""


def dump(tmp_path: Path, fake_psql: str, stamp: str = STAMP) -> subprocess.CompletedProcess:
    s = plans.Settings(str(tmp_path / "backups"), access(), "postgres", "job_agent", ("sh", "-c", fake_psql, "psql"))
    step = plans.dump_step(s, stamp, "rel-1")
    return subprocess.run(list(step.argv), input=step.stdin, check=False, capture_output=True, timeout=60)


def test_a_good_dump_makes_a_whole_set_of_0600_files_in_0700_folders(tmp_path):
    done = dump(tmp_path, GOOD)
    assert done.returncode == 0, done.stderr
    root, set_dir = tmp_path / "backups", tmp_path / "backups" / STAMP
    assert [p.name for p in root.iterdir()] == [STAMP]
    assert stat.S_IMODE(root.stat().st_mode) == 0o700 and stat.S_IMODE(set_dir.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in set_dir.iterdir()} == {
        "db.dump": 0o600, "db.dump.sha256": 0o600, "manifest.json": 0o600, "tags": 0o600}
    got = manifests.parse((set_dir / "manifest.json").read_text())
    data = (set_dir / "db.dump").read_bytes()
    assert (got.sha256, got.size, got.revision, got.rows, got.release) == (
        hashlib.sha256(data).hexdigest(), len(data), "abc", {"public.t": 2}, "rel-1")
    assert (set_dir / "db.dump.sha256").read_text() == f"{got.sha256}  db.dump\n"
    assert (set_dir / "tags").read_text() == f"release=rel-1\nrevision=abc\nsize={len(data)}\n"
    assert done.stdout.decode().startswith(f"opskit-set {set_dir}\n")


@pytest.mark.parametrize("fake, reason", [
    # pg_dump wrote half a dump and failed
    ("cat >/dev/null; printf 'PGDMP-half'; echo 'opskit-dump-exit 1' >&2; echo 'pg_dump: error: disk full' >&2",
     "pg_dump failed"),
    # psql itself stopped (the database went away) after pg_dump
    ("cat >/dev/null; printf 'PGDMP'; echo 'opskit-dump-exit 0' >&2; echo 'FATAL: terminating' >&2; exit 2",
     "psql stopped"),
    # no census line: the manifest would have no rows
    ("cat >/dev/null; printf 'PGDMP'; echo 'opskit-dump-exit 0' >&2", "no census"),
    # an empty dump
    (f"cat >/dev/null; echo 'opskit-dump-exit 0' >&2; echo '{CENSUS}' >&2", "pg_dump wrote nothing"),
])
def test_a_failure_anywhere_leaves_no_set_named_like_a_good_one(tmp_path, fake, reason):
    done = dump(tmp_path, fake)
    assert done.returncode != 0 and reason in done.stderr.decode()
    assert list((tmp_path / "backups").iterdir()) == []  # neither the stamp nor its temp folder


def test_an_existing_set_is_never_overwritten(tmp_path):
    assert dump(tmp_path, GOOD).returncode == 0
    before = (tmp_path / "backups" / STAMP / "db.dump").read_bytes()
    done = dump(tmp_path, GOOD.replace("PGDMP-fake-dump", "PGDMP-other"))
    assert done.returncode != 0 and b"exists already" in done.stderr
    assert (tmp_path / "backups" / STAMP / "db.dump").read_bytes() == before


def test_local_upkeep_keeps_the_newest_sets_and_nothing_else_is_touched(tmp_path):
    root = tmp_path / "backups"
    names = ["20261128T030000Z", "20261129T030000Z", "20261130T030000Z", "20261201T030000Z"]
    for name in names + [".drill-x1", ".20261201T040000Z.partial"]:
        (root / name).mkdir(parents=True)
    (root / "notes.txt").write_text("mine")
    step = plans.prune_local_step(plans.Settings(str(root), access(), "postgres", "db", (), keep_local=2))
    done = subprocess.run(list(step.argv), check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in root.iterdir()) == [".20261201T040000Z.partial", ".drill-x1", *names[2:],
                                                      "notes.txt"]
    assert done.stdout.split("\n")[:2] == [f"removed {names[1]}", f"removed {names[0]}"]
