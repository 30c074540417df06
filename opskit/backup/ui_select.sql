-- Can the UI role read what it reads in production? One line: `opskit-ui {json}` with whether it
-- may connect, and the tables (schema.table) it may NOT select from. The role name is psql's :ui.
SELECT 'opskit-ui ' || json_build_object(
    'connect', has_database_privilege(:'ui', current_database(), 'CONNECT'),
    'denied', (SELECT coalesce(json_agg(n.nspname || '.' || c.relname ORDER BY n.nspname, c.relname), '[]'::json)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname = 'public'
                 AND NOT (has_schema_privilege(:'ui', n.oid, 'USAGE') AND has_table_privilege(:'ui', c.oid, 'SELECT')))
)::text;
