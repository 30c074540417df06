#!/bin/sh
# First boot only: the Postgres entrypoint runs /docker-entrypoint-initdb.d/* when the data
# directory is empty, connected as POSTGRES_USER, the superuser role (its password came from
# POSTGRES_PASSWORD_FILE into initdb). This creates the admin and UI roles from roles.psql, the
# same script that `invoke db.roles` applies on every deploy (which also fixes an older volume).
# Their passwords come from the container's secret files, plain text: roles.psql sets
# password_encryption = scram-sha-256, so SCRAM is what is stored (the first `invoke db.roles`
# then reports "changed" once: it stores its own, stable verifiers). They reach psql as
# `\set name `cat FILE`` lines on its stdin: psql reads the file itself, so no password is in any
# argv or environment, nor in the SQL text or the server log (roles.psql turns statement logging
# off for its session).
set -eu
admin_file=${POSTGRES_ADMIN_PASSWORD_FILE:-/run/secrets/postgres_admin_password}
ui_file=${POSTGRES_UI_PASSWORD_FILE:-/run/secrets/postgres_ui_password}
for file in "$admin_file" "$ui_file"; do
  if [ ! -s "$file" ]; then
    echo "10-roles.sh: $file is missing or empty: set postgres_admin_password and postgres_ui_password in the inventory secrets" >&2
    exit 1
  fi
done

# a psql backquote runs through the shell: the file names go in single quotes, each ' spelled '\''
shell_quote() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
# in a subshell: the entrypoint sources a script that is not executable, and must keep its cwd
(
  cd "$(dirname "${BASH_SOURCE:-$0}")"
  {
    printf '\\set admin_password `cat %s`\n' "$(shell_quote "$admin_file")"
    printf '\\set ui_password `cat %s`\n' "$(shell_quote "$ui_file")"
    printf '\\i roles.psql\n'
  } | psql --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" --set=ON_ERROR_STOP=1 --file -
)
