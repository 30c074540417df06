#!/bin/sh
# First boot only: the Postgres entrypoint runs /docker-entrypoint-initdb.d/* when the data
# directory is empty. It creates the two roles from roles.psql, the same script that
# `invoke db.roles` applies on every deploy (which also fixes a volume that predates the roles).
# Passwords come from the container's environment (the release's env/postgres.env, mode 0600).
set -eu
psql --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=admin_password="$POSTGRES_PASSWORD" \
  --set=ui_password="$POSTGRES_UI_PASSWORD" \
  --file "$(dirname "$0")/roles.psql"
