-- As the UI role: log in, read an app table, then try CREATE TABLE inside a transaction that is
-- rolled back (it must fail: the UI role creates nothing). psql variable: probe, the table name.
SELECT 'login', current_user;
SELECT 'read_runs', count(*) FROM (SELECT 1 FROM runs LIMIT 1) AS r;
BEGIN;
CREATE TABLE :"probe" (id integer);
SELECT 'created', :'probe';
ROLLBACK;
