-- Facts about roles, grants, Alembic and connections, read as the admin role. One row per fact,
-- its kind first. psql variables: admin and ui, the two roles.
SELECT 'role', rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolconnlimit, rolbypassrls
  FROM pg_roles WHERE rolname IN (:'admin', :'ui');
SELECT 'db_owner', pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database();
SELECT 'schema_owner', pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public';
SELECT 'ui_priv', 'schema_create', has_schema_privilege(:'ui', 'public', 'CREATE')
  WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
SELECT 'ui_priv', 'schema_usage', has_schema_privilege(:'ui', 'public', 'USAGE')
  WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
SELECT 'ui_priv', 'db_create', has_database_privilege(:'ui', current_database(), 'CREATE')
  WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
SELECT 'ui_priv', 'db_connect', has_database_privilege(:'ui', current_database(), 'CONNECT')
  WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
SELECT 'table', c.relname, pg_get_userbyid(c.relowner),
       has_table_privilege(:'ui', c.oid, 'SELECT'), has_table_privilege(:'ui', c.oid, 'INSERT'),
       has_table_privilege(:'ui', c.oid, 'UPDATE'), has_table_privilege(:'ui', c.oid, 'DELETE'),
       has_table_privilege(:'ui', c.oid, 'TRUNCATE'), has_table_privilege(:'ui', c.oid, 'REFERENCES'),
       has_table_privilege(:'ui', c.oid, 'TRIGGER')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui')
 ORDER BY c.relname;
SELECT 'sequence', c.relname, has_sequence_privilege(:'ui', c.oid, 'USAGE')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'S' AND EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui')
 ORDER BY c.relname;
SELECT 'default_acl', d.defaclobjtype, d.defaclacl::text
  FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
 WHERE n.nspname = 'public' AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = :'admin');
SELECT 'connections', count(*) FROM pg_stat_activity WHERE backend_type = 'client backend';
SELECT 'max_connections', setting FROM pg_settings WHERE name = 'max_connections';
SELECT 'reserved_connections', setting FROM pg_settings WHERE name = 'superuser_reserved_connections';
SELECT 'role_connections', usename, count(*) FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND usename IS NOT NULL GROUP BY usename;
SELECT 'alembic', version_num FROM alembic_version;
