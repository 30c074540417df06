"""The migrate step as data: the upgrade always, or, with the image's Alembic heads known, only
when the database's alembic_version differs; and the heads read from a build context."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from opskit import ROOT, db, deploy, inventory

FOLDER = "/srv/opskit/releases/r1"
API = ROOT / "tests/fixtures/app/api"


@pytest.fixture(scope="module")
def env():
    return inventory.load("local", with_secrets=False)


def test_with_no_heads_the_upgrade_runs_as_it_is(env):
    step = db.migrate_step(env, FOLDER)
    assert step.argv[0] == "docker" and list(step.argv[-5:]) == ["-T", "api", "alembic", "upgrade", "head"]


def run_script(step, version_rows: str | None, tmp_path) -> subprocess.CompletedProcess:
    """The step's sh program with `docker` a fake: `compose exec` prints `version_rows` (None: psql
    fails), `compose run` prints that the upgrade ran."""
    fake = tmp_path / "bin" / "docker"
    fake.parent.mkdir(exist_ok=True)
    rows = "exit 2" if version_rows is None else f"printf {version_rows!r}"
    fake.write_text(f"#!/bin/sh\ncase \" $* \" in *' exec '*) {rows};; *' run '*) echo UPGRADE RAN;; esac\n")
    fake.chmod(0o755)
    return subprocess.run(list(step.argv), capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{fake.parent}:/usr/bin:/bin"})


@pytest.mark.parametrize("rows, runs", [
    ("0002\n", False),            # at head: nothing to run
    ("0001\n", True),             # behind
    ("", True),                   # no revision yet (an empty schema)
    (None, True),                 # psql failed (no such table, a role that cannot log in): any doubt runs it
    ("0002\n0003\n", True),       # two heads in the database, one in the image
])
def test_the_upgrade_runs_unless_the_database_is_at_the_images_heads(env, tmp_path, rows, runs):
    done = run_script(db.migrate_step(env, FOLDER, ("0002",)), rows, tmp_path)
    assert done.returncode == 0, done.stderr
    assert ("UPGRADE RAN" in done.stdout) is runs and (db.AT_HEAD in done.stdout) is not runs
    assert db.migrate_result(done.stdout).applied == ()


def test_several_heads_compare_as_a_sorted_set(env, tmp_path):
    done = run_script(db.migrate_step(env, FOLDER, ("b2", "a1")), "a1\nb2\n", tmp_path)
    assert db.AT_HEAD in done.stdout and "UPGRADE RAN" not in done.stdout


def test_the_heads_of_the_sample_app_are_read_from_its_scripts():
    assert db.alembic_heads(API) == ("0002",)


def test_a_new_revision_moves_the_heads(tmp_path):
    context = tmp_path / "api"
    shutil.copytree(API, context, ignore=shutil.ignore_patterns("__pycache__"))
    (context / "migrations/versions/0003_more.py").write_text(
        'revision = "0003"\ndown_revision = "0002"\n\ndef upgrade():\n    pass\n\ndef downgrade():\n    pass\n')
    assert db.alembic_heads(context) == ("0003",)
    assert not list(context.rglob("__pycache__"))  # the build context is left as it was


@pytest.mark.parametrize("breakage", ["no alembic.ini", "a script that cannot be imported"])
def test_heads_that_cannot_be_read_are_unknown_and_the_upgrade_runs(tmp_path, breakage):
    context = tmp_path / "api"
    shutil.copytree(API, context, ignore=shutil.ignore_patterns("__pycache__"))
    if breakage == "no alembic.ini":
        (context / "alembic.ini").unlink()
    else:
        (context / "migrations/versions/0003_x.py").write_text(
            'import a_module_this_machine_lacks\nrevision = "0003"\ndown_revision = "0002"\n')
    assert db.alembic_heads(context) is None


def test_the_deploy_plans_the_guarded_step_with_the_api_contexts_heads(env):
    assert deploy.migration_heads(env) == ("0002",)
