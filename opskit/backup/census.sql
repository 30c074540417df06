-- What a backup set's manifest records about the database, and what a drill reads back from the
-- restored copy to compare: Alembic's revision and the row count of every table, as two lines
-- (`opskit-revision REV`, `opskit-census {json}`). Runs in whatever transaction psql is in: inside
-- the dump's exported snapshot (backup.sql), the counts are those of the dump, not of a moment later.
-- Counting goes through query_to_xml: one statement counts tables whose names it finds at run time.
SELECT coalesce(CASE WHEN to_regclass('public.alembic_version') IS NOT NULL THEN
         (xpath('/row/v/text()', query_to_xml(
            'SELECT string_agg(version_num, ''+'' ORDER BY version_num) AS v FROM public.alembic_version',
            false, true, '')))[1]::text END, '') AS opskit_revision \gset
SELECT 'opskit-revision ' || :'opskit_revision';
SELECT 'opskit-census ' || json_build_object(
    'database', current_database(),
    'server_version', current_setting('server_version'),
    'revision', nullif(:'opskit_revision', ''),
    'rows', (SELECT coalesce(json_object_agg(n.nspname || '.' || c.relname,
                 (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                                                      false, true, '')))[1]::text::bigint
                 ORDER BY n.nspname, c.relname), '{}'::json)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%')
)::text;
