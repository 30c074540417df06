"""Backups proven by restores, on real parts: a real PostgreSQL (the local cluster of pg_server),
restic 0.14 in its kit container, and an SFTP server in a container of its own (the stand-in for a
Hetzner Storage Box), on a Docker network this module makes (`opskit-bk-*`).

The backup and drill plans run through the real Runner; "the server" is this machine (a transport
that runs argv here instead of over SSH), so what runs is exactly what the plans hold: dump.sh with
the local cluster's psql and pg_dump, `docker run` of the restic image, ssh with a pinned host key.
The SFTP host key is read out of band (`docker exec`), never learnt on first contact.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from opskit import ROOT
from opskit.backup import drill as drills
from opskit.backup import manifest as manifests
from opskit.backup import plan as plans
from opskit.backup import restic, schedule, snapshots
from opskit.errors import StepFailed
from opskit.runner import Runner, write_local
from opskit.sim import kit, kit_plan
from opskit.secrets import Secret
from opskit.ssh import Completed
from opskit.steps import SERVER, Plan, Run
from tests.integration.pg_server import pg_server  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

RESTIC_IMAGE, SFTP_IMAGE = kit_plan.TAGS["restic"], kit_plan.TAGS["sftp"]
SFTP_USER, SFTP_ALIAS = "backup", "storage"
#: distinct enough that finding it anywhere cannot be a coincidence
PASSWORD = f"restic-pw-{uuid.uuid4().hex}"
RUNS = 3000  # rows in `runs`: a dump of a few hundred KB, so its data pack is the largest file


def docker(*argv: str, check: bool = True, timeout: float = 180, stdin: bytes | None = None):
    done = subprocess.run(["docker", *argv], check=False, capture_output=True, timeout=timeout, input=stdin)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(argv[:3])} ... failed ({done.returncode}):\n"
                             f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}")
    return done


class ThisMachine:
    """The server transport for these tests: `ssh.Connection.run` and `write_file`, run here."""

    def run(self, argv, stdin=None, timeout=None, on_line=None) -> Completed:
        done = subprocess.run(list(argv), input=stdin, check=False, capture_output=True, timeout=timeout)
        if on_line:
            for line in done.stdout.decode(errors="replace").splitlines():
                on_line(line)
        return Completed(done.returncode, done.stdout, done.stderr)

    def write_file(self, path: str, content: bytes, mode: int) -> None:
        write_local(Path(path), content, mode)


class Watch:
    """Reads every process's argv and environment (/proc, the host's view: containers included)
    while it runs; `seen` lists where the password showed up."""

    def __init__(self, secret: str):
        self.secret = secret.encode()
        self.seen: list[str] = []
        self.samples = 0
        self.saw_restic_backup = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                for part in ("cmdline", "environ"):
                    try:
                        data = Path(f"/proc/{pid}/{part}").read_bytes()
                    except OSError:
                        continue
                    if self.secret in data:
                        self.seen.append(f"{pid}/{part}: {data[:80]!r}")
                    if part == "cmdline" and data.startswith(b"restic\0") and b"\0backup\0" in data:
                        self.saw_restic_backup = True  # the container's own process: the watch sees it
            self.samples += 1
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


@pytest.fixture(scope="module")
def images():
    """The two kit images, built now when missing or stale (seconds when up to date); only these
    and their parent, as test_acme_pebble does."""
    mirror, security = kit.mirrors()
    facts = kit.gather_facts()
    decisions = [d for d in kit_plan.decide(facts, False, mirror, security) if d.image.name in ("base", "restic", "sftp")]
    Runner().run(kit_plan.plan_decisions(facts, decisions, mirror, security, False, ROOT))
    return kit_plan.TAGS["restic"], kit_plan.TAGS["sftp"]


class Lab:
    """The module's network and its SFTP target; keys and pinned host key in a 0700 folder."""

    def __init__(self, folder: Path):
        self.prefix = f"opskit-bk-{uuid.uuid4().hex[:8]}"
        self.network, self.sftp = self.prefix, f"{self.prefix}-sftp"
        self.folder = folder
        self.volumes: list[str] = []

    def start(self) -> Lab:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        key = self.folder / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "opskit-bk-test", "-f", str(key)],
                       check=True, capture_output=True)
        self.ssh_key = key.read_text()
        docker("network", "create", self.network)
        docker("run", "-d", "--name", self.sftp, "--network", self.network, "--network-alias", SFTP_ALIAS,
               "--env", f"SFTP_AUTHORIZED_KEY={(key.with_suffix('.pub')).read_text().strip()}", SFTP_IMAGE)
        deadline = time.monotonic() + 30
        while docker("exec", self.sftp, "sh", "-c", "test -s /etc/ssh/ssh_host_ed25519_key.pub && pidof sshd",
                     check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError("the SFTP container's sshd did not start:\n" +
                                     docker("logs", self.sftp, check=False).stderr.decode(errors="replace"))
            time.sleep(0.2)
        # out of band: the key the container made, read through Docker, never over SSH
        host_key = docker("exec", self.sftp, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.decode().split()
        self.known_hosts = f"{SFTP_ALIAS} {host_key[0]} {host_key[1]}\n"
        return self

    def access(self, repo_path: str, known_hosts_file: Path | None = None, host: str = "jobagent") -> restic.Access:
        return restic.Access(restic.repository(f"sftp:{SFTP_USER}@{SFTP_ALIAS}:{repo_path}"), host,
                             password_file=str(self.folder / "restic-password"),
                             ssh_key_file=str(self.folder / "restic-ssh-key"),
                             known_hosts_file=str(known_hosts_file or self.folder / "restic-known-hosts"),
                             network=self.network, cache_volume=None)

    def stop(self) -> None:
        docker("rm", "-f", "-v", self.sftp, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture(scope="module")
def lab(images, tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("bk") / "secrets")
    try:
        yield lab.start()
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def credentials(lab):
    """The files restic mounts, written by the plan's own credential steps (0600)."""
    access = lab.access("/data/main")
    out = io.StringIO()
    Runner(ThisMachine(), out=out).run(Plan("credentials", plans.credential_steps(
        access, Secret(PASSWORD, "restic_password"), Secret(lab.ssh_key, "restic_ssh_key"), lab.known_hosts)))
    assert PASSWORD not in out.getvalue()
    return access


@pytest.fixture(scope="module")
def app_db(pg_server):
    """A database shaped like the app's: owned by an admin role, read by a UI role, an Alembic
    revision, and known rows."""
    tag = uuid.uuid4().hex[:8]
    db, admin, ui = f"bk_{tag}", f"bk_admin_{tag}", f"bk_ui_{tag}"
    pg_server.psql(f'CREATE ROLE "{admin}" LOGIN')
    pg_server.psql(f'CREATE ROLE "{ui}" LOGIN')
    pg_server.psql(f'CREATE DATABASE "{db}" OWNER "{admin}"')
    pg_server.psql(f"""
        SET ROLE "{admin}";
        CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
        INSERT INTO alembic_version VALUES ('3f2a9c1d0b7e');
        CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);
        INSERT INTO users (email) SELECT 'user' || i || '@example.test' FROM generate_series(1, 7) i;
        CREATE TABLE runs (id serial PRIMARY KEY, user_id int REFERENCES users, log text);
        INSERT INTO runs (user_id, log) SELECT 1 + i % 7, md5(i::text) || repeat(md5((i * 7)::text), 4)
            FROM generate_series(1, {RUNS}) i;
        CREATE TABLE empty_table (id int);
        GRANT SELECT ON alembic_version, users, runs, empty_table TO "{ui}";
        GRANT SELECT, INSERT, UPDATE, DELETE ON users, runs TO "{ui}";
    """, dbname=db)
    return {"db": db, "admin": admin, "ui": ui}


def settings_for(pg_server, app_db, access: restic.Access, root: Path, **keep) -> plans.Settings:
    bindir = str(pg_server.bindir)
    prefix = ("env", f"PGHOST={pg_server.socket_dir}", f"PGPORT={pg_server.port}",
              f"PATH={bindir}:/usr/local/bin:/usr/bin:/bin")
    return plans.Settings(str(root), access, pg_server.superuser, app_db["db"], prefix, **keep)


def run_plan(plan: Plan) -> str:
    out = io.StringIO()
    Runner(ThisMachine(), out=out).run(plan)
    return out.getvalue()


def databases(pg_server) -> set:
    return set(pg_server.psql_value("SELECT string_agg(datname, ' ') FROM pg_database").split())


# -- the proof: a backup restored, checked, and its scratch database gone ------------------------------


@pytest.fixture(scope="module")
def backed_up(pg_server, app_db, credentials, tmp_path_factory):
    """One backup of the app database over SFTP, watched for the password in every process."""
    root = tmp_path_factory.mktemp("main") / "backups"
    s = settings_for(pg_server, app_db, credentials, root)
    with Watch(PASSWORD) as watch:
        printed = run_plan(plans.backup_plan(s, "20261201T030000Z", "rel-1a2b3c"))
        printed += run_plan(Plan("list", [plans.snapshots_step(credentials)]))
    return {"settings": s, "root": root, "watch": watch, "printed": printed}


def test_a_backup_over_sftp_restores_in_a_drill_that_passes(pg_server, app_db, credentials, backed_up):
    s, root, watch = backed_up["settings"], backed_up["root"], backed_up["watch"]
    with Watch(PASSWORD) as drill_watch:
        report = drills.run(Runner(ThisMachine(), out=io.StringIO()),
                            drills.Drill(s, "latest", "t1", app_db["ui"], app_db["admin"]))
    assert watch.saw_restic_backup and watch.seen == [], f"the password showed in a process: {watch.seen[:3]}"
    assert drill_watch.seen == []
    assert PASSWORD not in backed_up["printed"] + report.summary()
    # the set on the server: 0700 folders, 0600 files, nothing half-made left beside it
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    set_dir = root / "20261201T030000Z"
    assert sorted(p.name for p in root.iterdir()) == ["20261201T030000Z"]
    assert stat.S_IMODE(set_dir.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in set_dir.iterdir()} == {
        "db.dump": 0o600, "db.dump.sha256": 0o600, "manifest.json": 0o600, "tags": 0o600}
    manifest = manifests.parse((set_dir / "manifest.json").read_text())
    assert manifest.rows == {"public.alembic_version": 1, "public.users": 7, "public.runs": RUNS,
                             "public.empty_table": 0}
    assert (manifest.revision, manifest.release, manifest.database) == ("3f2a9c1d0b7e", "rel-1a2b3c", app_db["db"])
    assert manifest.size == (set_dir / "db.dump").stat().st_size
    done = subprocess.run(["sha256sum", "--check", "db.dump.sha256"], cwd=set_dir, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # the snapshot as `invoke db.backups` lists it
    output = ThisMachine().run(plans.snapshots_step(credentials).argv)
    found = snapshots.parse(output.stdout.decode())
    assert [(x.release, x.revision, x.size, x.host, x.paths) for x in found] == [
        ("rel-1a2b3c", "3f2a9c1d0b7e", manifest.size, "jobagent", ("/backup",))]
    # the drill
    assert report.ok, report.summary()
    assert [c.name for c in report.checks] == list(drills.CHECKS)
    assert report.manifest == manifest
    assert f"{app_db['db']}_drill_t1" not in databases(pg_server)
    assert not (root / ".drill-t1").exists()


def test_a_drill_names_the_tables_a_ui_role_cannot_read(pg_server, app_db, backed_up):
    role = f"{app_db['ui']}_none"
    pg_server.psql(f'CREATE ROLE "{role}" LOGIN')
    # granted now, after the backup: the drill judges the grants the backup holds, so it still fails
    pg_server.psql(f'GRANT SELECT ON users TO "{role}"', dbname=app_db["db"])
    report = drills.run(Runner(ThisMachine(), out=io.StringIO()),
                        drills.Drill(backed_up["settings"], "latest", "t3", role, app_db["admin"]))
    assert report.failed == drills.CheckResult(
        "ui_select", False, "the UI role may not SELECT from public.alembic_version, public.empty_table, public.runs, public.users")
    assert [c.name for c in report.checks if c.ok] == [c for c in drills.CHECKS if c != "ui_select"]
    assert f"{app_db['db']}_drill_t3" not in databases(pg_server)


def test_rows_written_while_the_dump_runs_do_not_break_its_census(pg_server, app_db, credentials, tmp_path):
    """The census is taken in the dump's own snapshot: a writer beside it changes neither."""
    s = settings_for(pg_server, app_db, credentials, tmp_path / "backups")
    stop = threading.Event()
    written = [0]

    def write():  # one connection, autocommit: hundreds of rows a second, before, during and after the dump
        with pg_server.connect(pg_server.superuser, pg_server.superuser_password, app_db["db"],
                               autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO users (email) VALUES ('late@example.test')")
                written[0] += 1

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 30
        while written[0] < count:
            assert time.monotonic() < deadline and writer.is_alive(), f"the writer wrote only {written[0]} rows"
            time.sleep(0.01)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        wait_for(20)  # rows before the dump's snapshot ...
        run_plan(Plan("dump", [plans.dump_step(s, "20261201T040000Z", "rel-1a2b3c")]))
        wait_for(written[0] + 20)  # ... and after it, so the live count has moved on
    finally:
        stop.set()
        writer.join(30)
        total = int(pg_server.psql_value("SELECT count(*) FROM users", dbname=app_db["db"]))
        pg_server.psql("DELETE FROM users WHERE email = 'late@example.test'", dbname=app_db["db"])
    set_dir = tmp_path / "backups" / "20261201T040000Z"
    manifest = manifests.parse((set_dir / "manifest.json").read_text())
    scratch = f"{app_db['db']}_census"
    pg_server.psql(f'CREATE DATABASE "{scratch}"')
    try:
        subprocess.run([str(pg_server.bindir / "pg_restore"), "--username", pg_server.superuser,
                        "--dbname", scratch, "--exit-on-error",
                        str(set_dir / "db.dump")], env=pg_server.env(), check=True, capture_output=True)
        restored = int(pg_server.psql_value("SELECT count(*) FROM users", dbname=scratch))
    finally:
        pg_server.psql(f'DROP DATABASE "{scratch}" WITH (FORCE)')
    assert manifest.rows["public.users"] == restored
    assert 7 < restored < total  # the writer wrote before the dump's snapshot and after it


def test_a_failed_dump_leaves_no_set_named_like_a_good_one(pg_server, app_db, credentials, tmp_path):
    root = tmp_path / "backups"
    broken = {**app_db, "db": "no_such_database"}
    s = settings_for(pg_server, broken, credentials, root)
    with pytest.raises(StepFailed) as info:
        run_plan(plans.backup_plan(s, "20261201T050000Z", "rel-1a2b3c"))
    assert "no_such_database" in str(info.value) and "no backup set" in str(info.value)
    assert list(root.iterdir()) == []  # no set, no temp folder: the trap removed it


def test_the_timers_script_makes_a_backup_that_a_drill_proves(pg_server, app_db, lab, credentials, tmp_path):
    """What the systemd timer runs: the same plan, rendered once, run alone with its own stamp and the
    release `current` points to."""
    remote = tmp_path / "srv"
    (remote / "releases" / "rel-timer").mkdir(parents=True)
    (remote / "current").symlink_to("releases/rel-timer")
    access = lab.access("/data/timer")
    s = settings_for(pg_server, app_db, access, remote / "backups")
    text = schedule.script(plans.backup_plan(s, schedule.STAMP_NOW, schedule.RELEASE_NOW), str(remote))
    assert PASSWORD not in text
    path = remote / "backup.sh"
    path.write_text(text)
    done = subprocess.run(["sh", str(path)], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    [made] = [p for p in (remote / "backups").iterdir() if plans.STAMP.match(p.name)]  # beside it: the lock
    assert sorted(p.name for p in (remote / "backups").iterdir()) == sorted([made.name, ".lock"])
    assert manifests.parse((made / "manifest.json").read_text()).release == "rel-timer"
    report = drills.run(Runner(ThisMachine(), out=io.StringIO()),
                        drills.Drill(s, "latest", "t4", app_db["ui"], app_db["admin"]))
    assert report.ok, report.summary()


# -- a corrupted repository, a wrong host key ---------------------------------------------------------


def test_a_flipped_byte_in_the_repository_fails_the_drill_and_restic_check(pg_server, app_db, lab, credentials,
                                                                          tmp_path):
    access = lab.access("/data/corrupt")
    s = settings_for(pg_server, app_db, access, tmp_path / "backups")
    run_plan(plans.backup_plan(s, "20261201T060000Z", "rel-1a2b3c"))
    # the largest pack holds the dump's data; flip bytes in its middle, as a failing disk would
    repo = f"/srv/sftp/{SFTP_USER}/data/corrupt"
    largest = docker("exec", lab.sftp, "sh", "-c", f"ls -S {repo}/data/*/* | head -n 1").stdout.decode().strip()
    size = int(docker("exec", lab.sftp, "stat", "-c", "%s", largest).stdout)
    docker("exec", "-i", lab.sftp, "dd", f"of={largest}", "bs=1", f"seek={size // 2}", "count=16", "conv=notrunc",
           stdin=b"\xa5" * 16)
    report = drills.run(Runner(ThisMachine(), out=io.StringIO()),
                        drills.Drill(s, "latest", "t2", app_db["ui"], app_db["admin"]))
    assert not report.ok
    # restic authenticates every blob it decrypts: the restore itself refuses the flipped bytes
    assert report.failed.name == "restore", report.summary()
    assert "ciphertext verification failed" in report.failed.detail
    assert "FAILED at " + report.failed.name in report.summary()
    assert report.checks[-1] == drills.CheckResult("cleanup", True)  # cleaned up after the failure too
    assert f"{app_db['db']}_drill_t2" not in databases(pg_server)
    with pytest.raises(StepFailed) as info:
        run_plan(Plan("check", [plans.check_step(access, read_data=True)]))
    assert "Pack ID does not match" in info.value.output and os.path.basename(largest) in info.value.output


def test_a_target_showing_another_host_key_is_refused(lab, credentials, tmp_path):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"{SFTP_ALIAS} {kind} {key}\n")
    known.chmod(0o600)
    access = lab.access("/data/main", known_hosts_file=known)
    with pytest.raises(StepFailed) as info:
        run_plan(Plan("list", [plans.snapshots_step(access)]))
    # restic relays ssh's stderr line by line and may quit before any of it arrives (CI saw only
    # "unable to start the sftp session"), so the reason is read from the transport itself below
    said = info.value.output
    assert "unable to open repository" in said or "Host key verification failed" in said, said
    # the very ssh command restic was given, in the same container, with the same mounted files
    transport = ThisMachine().run(restic.container_argv(access, *restic.ssh_argv(access.repository)))
    assert transport.returncode != 0
    assert "Host key verification failed" in transport.stderr.decode(errors="replace"), transport.stderr
    # and the pinned key is what let the same call through
    assert ThisMachine().run(plans.snapshots_step(credentials).argv).returncode == 0


# -- retention: restic's own policy, on snapshots made at chosen times ---------------------------------

TIMES = ["2026-11-01 03:00:00", "2026-11-08 03:00:00", "2026-11-15 03:00:00", "2026-11-22 03:00:00",
         "2026-11-27 03:00:00", "2026-11-28 03:00:00", "2026-11-29 03:00:00", "2026-11-29 15:00:00",
         "2026-11-30 03:00:00"]
# keep daily 3: the newest of Nov 30, 29 and 28; weekly 3: the newest of ISO weeks 49 (Nov 30),
# 48 (Nov 29 15:00) and 47 (Nov 22). Nov 30 2026 is a Monday.
KEPT = ["2026-11-30 03:00:00", "2026-11-29 15:00:00", "2026-11-28 03:00:00", "2026-11-22 03:00:00"]


def test_forget_keeps_daily_and_weekly_by_restics_own_policy(pg_server, app_db, lab, credentials, tmp_path):
    access = lab.access("/data/retention")
    s = settings_for(pg_server, app_db, access, tmp_path / "backups", keep_daily=3, keep_weekly=3)
    data = tmp_path / "set"
    data.mkdir()
    (data / "tags").write_text("release=r\nrevision=none\nsize=1\n")
    run_plan(Plan("init", [plans.init_step(access)]))
    # one container for all: each snapshot at its chosen time (and one of another host, to be left alone)
    backups = " && ".join(f'"$@" backup --host {host} --time "{t}" /backup'
                          for host, t in [("jobagent", t) for t in TIMES] + [("other", TIMES[0])])
    argv = restic.container_argv(access, "sh", "-c", backups, "make-snapshots", *restic.restic_argv(access),
                                 mounts=((str(data), restic.SET_PATH, "ro"),))
    run_plan(Plan("snapshots", [Run("snapshots at chosen times", argv, on=SERVER, timeout=300)]))
    run_plan(Plan("forget", [plans.forget_step(s)]))
    left = snapshots.parse(ThisMachine().run(plans.snapshots_step(access).argv).stdout.decode())
    assert [f"{x.time:%Y-%m-%d %H:%M:%S}" for x in left] == KEPT
    other = restic.Access(access.repository, "other", access.password_file, access.ssh_key_file,
                          access.known_hosts_file, network=access.network, cache_volume=None)
    assert len(snapshots.parse(ThisMachine().run(plans.snapshots_step(other).argv).stdout.decode())) == 1
