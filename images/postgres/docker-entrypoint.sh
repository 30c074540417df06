#!/usr/bin/env bash
# Entrypoint of opskit/postgres:15: the parts of the official image's docker-entrypoint.sh
# (docker-library/postgres) that deployments rely on, on Debian's PostgreSQL.
#
# - First start (PGDATA has no PG_VERSION): initdb as POSTGRES_USER (default postgres) with
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust); connections from other
#   hosts use scram-sha-256 (or POSTGRES_HOST_AUTH_METHOD); like upstream, the local socket and
#   loopback inside the container keep initdb's trust. POSTGRES_DB (default: the user) is created,
#   then /docker-entrypoint-initdb.d/* run in sorted order against a temporary server that listens
#   on the unix socket only: *.sh executed (or sourced when not executable), *.sql / *.sql.gz /
#   *.sql.xz fed to psql. Never again on a data directory that is already initialised.
# - Runs as the postgres user (root drops privileges with setpriv) and execs postgres, so it is
#   PID 1 and gets the stop signal itself.
# *_FILE variants (POSTGRES_PASSWORD_FILE, ...) read the value from a file, as upstream does
#   (a Compose secret under /run/secrets: nothing in `docker inspect`). Unlike upstream, the
#   password leaves the environment before postgres starts: the server never needs it.
set -Eeo pipefail

log() { echo "docker-entrypoint: $*"; }
die() { echo "docker-entrypoint: error: $*" >&2; exit 1; }

# file_env VAR [DEFAULT]: VAR from $VAR or from the file named by $VAR_FILE, then exported.
file_env() {
	local var="$1" file_var="${1}_FILE" default="${2:-}" value
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		die "both $var and $file_var are set; set only one"
	fi
	value="$default"
	if [ -n "${!var:-}" ]; then
		value="${!var}"
	elif [ -n "${!file_var:-}" ]; then
		value="$(< "${!file_var}")"
	fi
	export "$var"="$value"
	unset "$file_var"
}

setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=}"
}

as_root_prepare() {
	mkdir -p "$PGDATA"
	chmod 00700 "$PGDATA" || :
	find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
	mkdir -p /var/run/postgresql
	chown postgres:postgres /var/run/postgresql
	chmod 03775 /var/run/postgresql
}

psql_run() {
	psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

init_database() {
	if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
		die "the database is uninitialized and POSTGRES_PASSWORD is not set.
  Set POSTGRES_PASSWORD (the superuser's password for connections from other hosts), or
  POSTGRES_HOST_AUTH_METHOD=trust to allow every connection without a password (never in production)."
	fi
	log "initialising $PGDATA for user $POSTGRES_USER, database $POSTGRES_DB"
	local -a extra=()
	read -r -a extra <<< "$POSTGRES_INITDB_ARGS"
	if [ -n "$POSTGRES_PASSWORD" ]; then
		# the password reaches initdb through a pipe, never a file or the command line
		initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${extra[@]}"
	else
		initdb --username="$POSTGRES_USER" "${extra[@]}"
	fi
	{
		echo
		echo "# added by docker-entrypoint.sh: every other host authenticates"
		echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
	} >> "$PGDATA/pg_hba.conf"

	# a temporary server on the unix socket only: nothing outside can connect half-initialised
	local -a opts=("$@")
	[ "${opts[0]:-}" = postgres ] && opts=("${opts[@]:1}")
	PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -w start \
		-o "$(printf '%q ' -c listen_addresses= -p "${PGPORT:-5432}" "${opts[@]}")"

	export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
	if [ -z "$(POSTGRES_DB=postgres psql_run --tuples-only --set db="$POSTGRES_DB" \
			<<< "SELECT 1 FROM pg_database WHERE datname = :'db';")" ]; then
		POSTGRES_DB=postgres psql_run --quiet --set db="$POSTGRES_DB" <<< 'CREATE DATABASE :"db";'
	fi

	shopt -s nullglob
	local f
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh)
				if [ -x "$f" ]; then log "running $f"; "$f"
				else log "sourcing $f"; . "$f"; fi ;;
			*.sql) log "running $f"; psql_run -f "$f" ;;
			*.sql.gz) log "running $f"; gunzip -c "$f" | psql_run ;;
			*.sql.xz) log "running $f"; xz -dc "$f" | psql_run ;;
			*) log "ignoring $f" ;;
		esac
	done
	shopt -u nullglob
	unset PGPASSWORD

	PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -m fast -w stop
	log "init complete; starting PostgreSQL"
}

# `docker run opskit/postgres:15 -c shared_buffers=256MB` means postgres with those flags
if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = postgres ]; then
	setup_env
	if [ "$(id -u)" = 0 ]; then
		as_root_prepare
		export HOME=/var/lib/postgresql
		exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
	fi
	if [ ! -s "$PGDATA/PG_VERSION" ]; then
		init_database "$@"
	else
		log "$PGDATA is initialised already: initdb and /docker-entrypoint-initdb.d skipped"
	fi
	unset POSTGRES_PASSWORD PGPASSWORD
fi

exec "$@"
