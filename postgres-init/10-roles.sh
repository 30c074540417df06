#!/bin/sh
# First boot only: the Postgres entrypoint runs /docker-entrypoint-initdb.d/* when the data
# directory is empty. It creates the two roles from roles.psql, the same script that
# `invoke db.roles` applies on every deploy (which also fixes a volume that predates the roles).
# Passwords come from the container's environment (the release's env/postgres.env, mode 0600)
# as plain text: roles.psql sets password_encryption = scram-sha-256, so SCRAM is what is stored
# (the first `invoke db.roles` then reports "changed" once: it stores its own, stable verifiers).
# They are psql variables, never part of the SQL text (nor of the server log: roles.psql turns
# statement logging off for its session). This psql runs inside the container before any port is
# open; its argv is as visible as the container's environment, which holds the same values.
set -eu
psql --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=ON_ERROR_STOP=1 \
  --set=admin_password="${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is empty: set postgres_admin_password in the inventory secrets}" \
  --set=ui_password="${POSTGRES_UI_PASSWORD:?POSTGRES_UI_PASSWORD is empty: set postgres_ui_password in the inventory secrets}" \
  --file "$(dirname "$0")/roles.psql"
