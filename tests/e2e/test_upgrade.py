"""The upgrade from a server that the previous release deployed: its own code, checked out from this
repository's history, brings up and deploys a fresh simulated VPS; then today's code deploys onto it.

What that release left is what least privilege must take over in place: Postgres whose bootstrap
superuser is the admin role (POSTGRES_USER), a Caddy volume written by a root Caddy, secrets in env
files. After the upgrade: the same rows in every table, the same local CA, the admin role no
superuser, no secret in `docker inspect`, and the whole smoke suite green.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from opskit import ROOT, deploy, inventory
from opskit.runner import Runner
from opskit.sim import vps
from opskit.sim.vps_config import VpsConfig
from tests.e2e.live import CADDY_ROOT_CERT
from tests.e2e.test_smoke_catches import assert_no_secret_leaked, run_smoke

pytestmark = pytest.mark.e2e

#: the last release before least privilege (main before the roles, secret files and confinement)
PREVIOUS = "239afb20e517195d2743226776355b26c8c1203e"


def git(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True)


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """The previous release's tree, sharing this checkout's `.opskit/` (its key pair, known_hosts
    and generated secrets), so that both releases reach the same VPS with the same secrets."""
    if git("cat-file", "-e", f"{PREVIOUS}^{{commit}}").returncode != 0:
        pytest.fail(f"commit {PREVIOUS[:12]} (the previous release) is not in this checkout's history: "
                    "the upgrade test needs a clone with history (not --depth 1)")
    tree = tmp_path_factory.mktemp("previous") / "tree"
    made = git("worktree", "add", "--detach", str(tree), PREVIOUS)
    assert made.returncode == 0, made.stderr
    (ROOT / ".opskit").mkdir(exist_ok=True)
    (tree / ".opskit").symlink_to(ROOT / ".opskit")
    yield tree
    git("worktree", "remove", "--force", str(tree))


def run_previous(tree, *task: str) -> subprocess.CompletedProcess:
    """`invoke TASK` of the previous release: its tasks.py and its opskit, with this venv."""
    environ = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-m", "invoke", *task], cwd=tree, env=environ, capture_output=True,
                          text=True, timeout=1800, stdin=subprocess.DEVNULL)


def tables(d, role: str) -> dict[str, str]:
    """{table: "rows md5"} of every table in the app's schema, read as `role`."""
    pg = d.env.postgres
    sql = ("SELECT string_agg(format('SELECT %L, count(*) || '' '' || md5(coalesce(string_agg(t::text, '','' "
           "ORDER BY t::text), '''')) FROM public.%I t', tablename, tablename), ' UNION ALL ') "
           "FROM pg_tables WHERE schemaname = 'public'")
    psql = ["docker", "exec", "-i", d.container("postgres"), "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1",
            "-U", role, "-d", pg.database]
    query = d.out([*psql, "-c", sql]).strip()
    rows = d.out([*psql, "-F", "\t", "-c", query]).splitlines()
    return dict(line.split("\t", 1) for line in rows)


def test_a_server_deployed_by_the_previous_release_is_upgraded_in_place(vps_session, previous, tmp_path):
    config = VpsConfig.from_environment(inventory.load("local", with_secrets=False))
    vps.down(config)
    imported = run_previous(previous, "--version")
    assert imported.returncode == 0, imported.stderr
    where = subprocess.run([sys.executable, "-c", "import opskit; print(opskit.ROOT)"], cwd=previous,
                           env={**os.environ, "PYTHONPATH": str(previous)}, capture_output=True, text=True)
    assert where.stdout.strip() == str(previous), where.stdout + where.stderr  # the old code, not ours

    started = time.monotonic()
    old = run_previous(previous, "deploy")
    assert old.returncode == 0, (old.stdout + old.stderr)[-4000:]
    old_seconds = time.monotonic() - started

    d = vps_session.reload()
    pg = d.env.postgres
    before = tables(d, pg.admin_role)  # the previous release's admin role is the bootstrap superuser
    assert before.get("alembic_version", "").startswith("1 ") and any(
        not v.startswith("0 ") for t, v in before.items() if t != "alembic_version"), before
    old_ca = d.out(["docker", "exec", d.container("caddy"), "cat", CADDY_ROOT_CERT])
    assert "BEGIN CERTIFICATE" in old_ca
    assert d.out(["docker", "exec", d.container("caddy"), "id", "-u"]).strip() == "0"  # it was root

    started = time.monotonic()
    d.ensure()  # today's kit, provisioning (no change) and deploy
    new_seconds = time.monotonic() - started

    assert tables(d, pg.superuser_role) == before, "rows changed across the upgrade"
    roles = d.out(["docker", "exec", "-i", d.container("postgres"), "psql", "-X", "-At", "-U", pg.superuser_role,
                   "-d", pg.database, "-c", "SELECT rolname, rolsuper, oid = 10 FROM pg_roles WHERE rolname IN "
                   f"('{pg.superuser_role}', '{pg.admin_role}', '{pg.ui_role}') ORDER BY 1"]).split()
    assert roles == sorted([f"{pg.superuser_role}|t|t", f"{pg.admin_role}|f|f", f"{pg.ui_role}|f|f"]), roles
    caddy = d.container("caddy")
    assert d.out(["docker", "exec", caddy, "cat", CADDY_ROOT_CERT]) == old_ca  # the same local CA, handed over
    assert d.out(["docker", "exec", caddy, "id", "-u"]).strip() == "10001"

    run = run_smoke(tmp_path)
    assert run.returncode == 0, run.explain()
    assert_no_secret_leaked(run, d.env)
    print(f"\nupgrade: previous release deployed from nothing in {old_seconds:.0f}s, today's deployed over it "
          f"in {new_seconds:.0f}s; {len(before)} tables kept ({', '.join(f'{t}: {v.split()[0]} rows' for t, v in sorted(before.items()))})")

    # and back across it: `invoke rollback` serves the previous release on the upgraded database (its
    # apps log in as the admin role, now no superuser, which still owns every object), then today's again
    upgraded = d.path.rsplit("/", 1)[-1]
    now = tables(d, pg.superuser_role)  # the smoke suite's probe has written a run since `before`
    started = time.monotonic()
    back_to = deploy.rollback(d.env, d.connection, Runner(d.connection))
    assert back_to != upgraded and d.path.rsplit("/", 1)[-1] == back_to
    d.wait_healthy()
    assert tables(d, pg.superuser_role) == now, "rows changed across the rollback"
    status, _, body = d.https(d.env.domains.api, "/health")
    assert status == 200, body[:300]
    assert d.out(["docker", "exec", d.container("caddy"), "cat", CADDY_ROOT_CERT]) == old_ca
    back_seconds = time.monotonic() - started
    d.deploy(d.env)
    assert d.path.rsplit("/", 1)[-1] == upgraded
    run = run_smoke(tmp_path)
    assert run.returncode == 0, run.explain()
    print(f"rollback to the previous release in {back_seconds:.0f}s, green; today's again, green")
