-- The dump and its census in ONE snapshot: this transaction exports its snapshot, pg_dump (run by
-- psql's \! while the transaction stays open) dumps exactly that snapshot, and census.sql (appended
-- after this file) counts rows in it. A busy database (Celery writing) still gives a manifest that
-- matches its dump row for row.
-- Output: the dump on stdout (pg_dump's, through psql's own stdout); everything psql prints (the
-- census, errors, pg_dump's exit code) on stderr, which dump.sh reads.
\o /dev/stderr
\set ON_ERROR_STOP 1
\pset format unaligned
\pset tuples_only on
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT pg_export_snapshot() AS opskit_snapshot, current_database() AS opskit_db, current_user AS opskit_user \gset
\setenv OPSKIT_SNAPSHOT :opskit_snapshot
\setenv PGDATABASE :opskit_db
\setenv PGUSER :opskit_user
-- psql 15's \! does not stop on a failing command: its exit code is reported for dump.sh to check
\! pg_dump --format=custom --no-password --snapshot="$OPSKIT_SNAPSHOT"; echo "opskit-dump-exit $?" >&2
