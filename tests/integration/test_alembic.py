"""The sample app's Alembic migrations on a real PostgreSQL, as the admin role, after the roles
exist: what `invoke db.migrate` runs inside the API image, read by `db.migrate_result`."""

from __future__ import annotations

import itertools
import shutil

import pytest

from opskit import db

from .pg_server import API_DIR, alembic, apply_roles, pg_env, pg_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.postgres
_names = itertools.count(1)


@pytest.fixture
def database(pg_server, tmp_path):
    """An empty database with both roles, as a first deploy finds it."""
    env = pg_env(f"alembic_{next(_names)}", f"alembic_ui_{next(_names)}")
    pg_server.create_database(env.postgres.database)
    assert apply_roles(pg_server, env, tmp_path).returncode == 0
    return env.postgres.database


def tables(pg_server, database) -> list:
    return pg_server.psql_value("SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables "
                                "WHERE schemaname = 'public'", dbname=database).split()


def test_an_empty_database_is_upgraded_to_head_then_there_is_nothing_to_do(pg_server, database):
    first = alembic(pg_server, database, "upgrade", "head")
    assert first.returncode == 0, first.output
    assert db.migrate_result(first.output).summary() == (
        "migrations: applied 2: 0001 (create runs), 0002 (track the celery task per run and keep a status history)")
    assert tables(pg_server, database) == ["alembic_version", "run_events", "runs"]
    owner = pg_server.psql_value("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
                                 "WHERE relnamespace = 'public'::regnamespace", dbname=database)
    assert owner == pg_server.admin

    again = alembic(pg_server, database, "upgrade", "head")
    assert again.returncode == 0, again.output
    assert db.migrate_result(again.output).applied == ()
    assert "0002 (head)" in alembic(pg_server, database, "current").output


def test_a_failing_migration_stops_with_alembics_error_and_changes_nothing(pg_server, database, tmp_path):
    """Postgres runs DDL in the transaction: a revision that fails halfway leaves no half-made table,
    and the database stays at the revision it had (the running release keeps working)."""
    assert alembic(pg_server, database, "upgrade", "head").returncode == 0
    api = tmp_path / "api"
    shutil.copytree(API_DIR, api, ignore=shutil.ignore_patterns("__pycache__"))
    (api / "migrations/versions/0003_broken.py").write_text(
        'import sqlalchemy as sa\nfrom alembic import op\n\nrevision = "0003"\ndown_revision = "0002"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n"
        '    op.create_table("half_made", sa.Column("id", sa.Integer, primary_key=True))\n'
        '    op.add_column("runs", sa.Column("status", sa.Text()))  # exists already: fails\n')
    failed = alembic(pg_server, database, "upgrade", "head", cwd=api)
    assert failed.returncode != 0
    assert 'column "status" of relation "runs" already exists' in failed.output
    assert "half_made" not in tables(pg_server, database)
    assert pg_server.psql_value("SELECT version_num FROM alembic_version", dbname=database) == "0002"
