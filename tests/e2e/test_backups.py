"""Backups proven by restoring them, on the simulated VPS, off to a Storage Box beside it (an SFTP
container on the VPS's network: `opskit.sim.storage_box`, its host key pinned out of band).

The environment is `local` with a `backup:` section (an inventory copy): the same VPS and secrets,
plus restic's password, login key and the box's host key line, each a secret by reference (env:).
Every command runs as an operator types it: `scripts/invoke db.backup|db.backups|db.restore -e backup`.
The module deploys `local` back when it ends.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import secrets as random
import shutil
import stat
import subprocess

import pytest
import yaml

from opskit import ROOT
from opskit.errors import OpskitError
from opskit.secrets import Secret
from opskit.sim import storage_box
from opskit.sim.secrets import load as load_with_secrets
from tests.e2e.live import inventory_copy
from tests.e2e.test_smoke_catches import assert_caught, assert_no_secret_leaked, run_smoke
from tests.e2e.watch import start_run

pytestmark = pytest.mark.e2e

ENV = "backup"
REPOSITORY = "opskit-e2e"
BACKUP_CHECKS = ("test_newest_backup_is_younger_than_max_age", "test_latest_restore_drill_passed")


class Site:
    def __init__(self, env, inventory, box, environ):
        self.env, self.inventory, self.box, self.environ = env, inventory, box, environ

    def invoke(self, *task: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        done = subprocess.run([str(ROOT / "scripts" / "invoke"), *task], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **self.environ}, stdin=subprocess.DEVNULL)
        if check:
            assert done.returncode == 0, f"invoke {' '.join(task)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        secret = self.env.secrets["restic_password"].reveal()
        assert secret not in done.stdout + done.stderr, f"invoke {task[0]} printed the repository password"
        return done


@pytest.fixture(scope="module")
def site(live, tmp_path_factory):
    folder = tmp_path_factory.mktemp("backups")
    box = storage_box.up(folder)
    try:
        environ = {"OPSKIT_TEST_RESTIC_PASSWORD": random.token_urlsafe(24),
                   "OPSKIT_TEST_RESTIC_SSH_KEY": box.key_file.read_text(),
                   "OPSKIT_TEST_RESTIC_KNOWN_HOSTS": box.known_hosts}

        def edit(raw):
            env = copy.deepcopy(raw["environments"]["local"])
            env["backup"] = {"repository": box.repository(REPOSITORY), "max_age": "1h",
                             "keep": {"daily": 7, "weekly": 4}, "keep_local": 2}
            env.setdefault("secrets", {}).update({"restic_password": "env:OPSKIT_TEST_RESTIC_PASSWORD",
                                                  "restic_ssh_key": "env:OPSKIT_TEST_RESTIC_SSH_KEY",
                                                  "restic_known_hosts": "env:OPSKIT_TEST_RESTIC_KNOWN_HOSTS"})
            raw["environments"][ENV] = env

        path = inventory_copy(folder, edit)
        os.environ.update(environ)  # this process renders and deploys it too (secrets by env: reference)
        environ["OPSKIT_INVENTORY"] = str(path)
        env = load_with_secrets(ENV, path=path)
        live.deploy(env)
        yield Site(env, path, box, environ)
    finally:
        try:
            live.deploy(live.env)  # the e2e tier after this module expects `local`
        finally:
            storage_box.down()
            for name in ("OPSKIT_TEST_RESTIC_PASSWORD", "OPSKIT_TEST_RESTIC_SSH_KEY", "OPSKIT_TEST_RESTIC_KNOWN_HOSTS"):
                os.environ.pop(name, None)


def post_runs(live, env, n: int) -> set[str]:
    web, made = live.web(), set()
    for _ in range(n):
        answer = start_run(web, env)
        assert answer.status == 202, (answer.status, answer.body[:300])
        made.add(json.loads(answer.body)["run_id"])
    return made


def run_ids(live, since: str | None = None) -> set[str]:
    """The ids in `runs`, or those created after `since` (a timestamp the server's Postgres gave)."""
    where = f" WHERE created_at > '{since}'" if since else ""
    return set(live.psql(f"SELECT id FROM runs{where}").split())


def test_a_backup_is_listed_downloaded_and_proven_by_a_drill(site, live, tmp_path):
    written = post_runs(live, site.env, 5)
    done = site.invoke("db.backup", "-e", ENV, "--download", str(tmp_path / "here"))
    assert "restic backup" in done.stderr and "saved" in done.stderr and "downloaded to" in done.stdout, done

    listed = site.invoke("db.backups", "-e", ENV).stdout
    first = listed.splitlines()[0]
    assert f"release {live.manifest['release']}" in first and "revision 0002" in first, listed

    [copy_dir] = list((tmp_path / "here").iterdir())
    assert stat.S_IMODE(copy_dir.stat().st_mode) == 0o700
    manifest = json.loads((copy_dir / "manifest.json").read_text())
    dump = (copy_dir / "db.dump").read_bytes()
    assert hashlib.sha256(dump).hexdigest() == manifest["dump"]["sha256"] and dump.startswith(b"PGDMP")
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in copy_dir.iterdir())
    assert manifest["rows"]["public.runs"] >= len(written)
    for name, secret in site.env.secrets.items():  # the dump holds data, never the operator's secrets
        assert secret.reveal().encode() not in dump, f"the dump holds the value of {name}"

    drill = site.invoke("db.restore", "-e", ENV).stdout
    assert "passed" in drill.splitlines()[0] and "FAIL" not in drill, drill

    run = run_smoke(tmp_path, "-m", "backups", env_name=ENV, environ=site.environ)
    assert run.returncode == 0, run.explain()
    assert {n: c.outcome for n, c in run.cases.items()} == {c: "passed" for c in BACKUP_CHECKS}, run.explain()
    assert_no_secret_leaked(run, site.env)


def test_the_timer_provision_installs_runs_the_same_backup_and_logs_no_secret(site, live):
    done = site.invoke("provision", "-e", ENV, "--yes", timeout=1200)
    assert "opskit-backup.timer" in done.stdout + done.stderr, done.stdout[-3000:]
    vps = ["docker", "exec", site.env.vps.container]
    enabled = subprocess.run([*vps, "systemctl", "is-enabled", "opskit-backup.timer"], capture_output=True, text=True)
    assert enabled.stdout.strip() == "enabled", enabled
    before = site.invoke("db.backups", "-e", ENV).stdout.splitlines()[0]

    ran = subprocess.run([*vps, "systemctl", "start", "opskit-backup.service"], capture_output=True, text=True,
                         timeout=900)  # a oneshot: returns when the run ended
    journal = subprocess.run([*vps, "journalctl", "-u", "opskit-backup.service", "--no-pager", "-o", "cat"],
                             capture_output=True, text=True).stdout
    assert ran.returncode == 0, ran.stderr + journal[-3000:]
    result = subprocess.run([*vps, "systemctl", "show", "-p", "Result", "--value", "opskit-backup.service"],
                            capture_output=True, text=True).stdout.strip()
    assert result == "success" and "done" in journal, journal[-3000:]
    for name, secret in site.env.secrets.items():  # a key's lines count one by one
        for part in [secret.reveal(), *(line for line in secret.reveal().splitlines() if len(line) >= 16)]:
            assert part not in journal, f"the backup's journal holds (part of) the value of {name}"
    newest = site.invoke("db.backups", "-e", ENV).stdout.splitlines()[0]
    assert newest != before and "revision 0002" in newest, newest
    again = site.invoke("provision", "-e", ENV, "--dry-run", timeout=600)
    said = again.stdout + again.stderr
    assert "backup_timer: no change" in said and "no change in any of" in said, said[-2000:]


def test_a_lost_database_comes_back_from_the_off_server_backup(site, live, tmp_path):
    written = post_runs(live, site.env, 3)
    site.invoke("db.backup", "-e", ENV)
    before = run_ids(live)
    assert written <= before

    # a lost disk: the stack down and the Postgres volume gone
    live.run(live.compose("down"), timeout=300)
    live.run(["docker", "volume", "rm", f"{site.env.project}_postgres_data"])
    live.deploy(site.env, force=True)  # from nothing: an empty database, migrated; no backup of it
    assert not (run_ids(live) & before)

    refused = site.invoke("db.restore", "-e", ENV, "--live", check=False)
    assert refused.returncode != 0 and "--yes" in refused.stderr, refused.stderr  # no terminal, no --yes

    started = live.psql("SELECT now()")
    done = site.invoke("db.restore", "-e", ENV, "--live", "--yes", timeout=1200)
    assert "restored snapshot" in done.stdout, done.stdout + done.stderr
    # every row of the backup, and beside them only what the restore's own smoke run wrote (its SSE check)
    after = run_ids(live)
    assert before <= after and after - before == run_ids(live, since=started), sorted(after - before)

    # the whole smoke suite ran at the restore's end and passed (else `db.restore` exits 6); the
    # backup checks again here, where their outcomes can be read one by one
    run = run_smoke(tmp_path, "-m", "backups", env_name=ENV, environ=site.environ)
    assert {c: run.cases[c].outcome for c in BACKUP_CHECKS} == {c: "passed" for c in BACKUP_CHECKS}, run.explain()
    assert_no_secret_leaked(run, site.env)


FAILING_MIGRATION = '''"""A destructive migration that fails half-way: its first part is committed (the e2e backup test's)."""
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.execute("TRUNCATE runs CASCADE")
    with op.get_context().autocommit_block():  # commits the TRUNCATE: the data is gone for good
        pass
    op.execute("SELECT opskit_no_such_function()")


def downgrade() -> None:
    pass
'''


@pytest.fixture(scope="module")
def migrating(site, tmp_path_factory):
    """The environment with an API whose migration 0003 fails half-way (built once, for two tests)."""
    folder = tmp_path_factory.mktemp("migrating")
    api = folder / "api"
    shutil.copytree(ROOT / "tests/fixtures/app/api", api)
    (api / "migrations/versions/0003_fails_half_way.py").write_text(FAILING_MIGRATION)

    def edit(raw):
        env = copy.deepcopy(yaml.safe_load(site.inventory.read_text())["environments"][ENV])
        env.setdefault("builds", {}).setdefault("api", {})["context"] = str(api)
        raw["environments"][ENV] = env

    return load_with_secrets(ENV, path=inventory_copy(folder, edit))


def test_a_failed_migration_is_undone_by_its_pre_migration_backup(site, live, migrating):
    written = post_runs(live, site.env, 3)
    before = run_ids(live)
    listed_before = site.invoke("db.backups", "-e", ENV).stdout.splitlines()
    bad = migrating
    with pytest.raises(OpskitError) as failed:
        live.deploy(bad)
    assert "alembic upgrade head" in str(failed.value), failed.value
    assert not (run_ids(live) & written), "the failing migration was to have removed the rows"

    listed = site.invoke("db.backups", "-e", ENV).stdout.splitlines()
    newest = listed[0]  # the backup taken before the migration (retention may have let an older one of today go)
    assert newest not in listed_before and "revision 0002" in newest, listed
    started = live.psql("SELECT now()")
    done = site.invoke("db.restore", "-e", ENV, "--live", "--yes", "--snapshot", newest.split()[0], timeout=1200)
    assert "revision 0002" in done.stdout, done.stdout
    after = run_ids(live)
    assert before <= after and after - before == run_ids(live, since=started), sorted(after - before)


def test_no_backup_at_head_and_no_migration_when_the_backup_fails(site, live, migrating, tmp_path, capfd):
    listed = site.invoke("db.backups", "-e", ENV).stdout.splitlines()
    capfd.readouterr()
    live.deploy(site.env, force=True)
    assert "no migration pending: no backup" in capfd.readouterr().err
    assert site.invoke("db.backups", "-e", ENV).stdout.splitlines() == listed

    # a migration pending (the one that would empty `runs`), and the Storage Box shows another host
    # key than the one pinned: the backup fails, so nothing migrates
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    wrong = f"{site.box.known_hosts.split()[0]} {other[0]} {other[1]}\n"
    bad = dataclasses.replace(migrating, secrets={**migrating.secrets,
                                                  "restic_known_hosts": Secret(wrong, "restic_known_hosts")})
    rows = run_ids(live)
    current, script = live.manifest["release"], live.out(["sha256sum", site.env.remote_dir + "/backups/bin/backup.sh"])
    with pytest.raises(OpskitError) as failed:
        live.deploy(bad)
    assert "backup before migrating" in str(failed.value), failed.value
    assert live.psql("SELECT version_num FROM alembic_version") == "0002"
    assert rows and run_ids(live) == rows, "the migration ran"
    assert live.manifest["release"] == current
    assert live.out(["sha256sum", site.env.remote_dir + "/backups/bin/backup.sh"]) == script
    # the recovery put the previous release's config back, the pinned host key with it
    assert site.invoke("db.backups", "-e", ENV).stdout.splitlines() == listed


def test_a_flipped_byte_in_the_repository_fails_the_drill_naming_the_check(site, live, tmp_path):
    """Last in the module: it damages the repository."""
    repo = site.box.data_path(REPOSITORY)
    # every pack: which one holds the latest snapshot's dump is restic's business
    subprocess.run(["docker", "exec", storage_box.CONTAINER, "sh", "-c",
                    f"for pack in {repo}/data/*/*; do printf 'opskit-corrupted!' | "
                    'dd of="$pack" bs=1 seek=40 conv=notrunc status=none; done'], check=True)
    done = site.invoke("db.restore", "-e", ENV, check=False)
    assert done.returncode != 0, done.stdout
    assert "FAILED at restore" in done.stdout and "the drill failed at restore" in done.stderr, done.stdout + done.stderr

    run = run_smoke(tmp_path, "-m", "backups", env_name=ENV, environ=site.environ)
    assert_caught(run, "test_latest_restore_drill_passed", "failed at restore", f"invoke db.restore -e {ENV}")
