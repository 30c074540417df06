#!/usr/bin/env bash
# System packages the tests need beyond the venv:
# - PostgreSQL's server binaries (tests/integration/pg_server.py runs a throw-away cluster on
#   loopback with them): Debian's `postgresql` without its default cluster, so no server is left
#   running on 5432;
# - a real browser for the e2e tier (tests/e2e/test_browser_csp.py): Debian's `chromium`, its
#   `chromium-driver`, and `certutil` (libnss3-tools) to make it trust the simulated VPS's local CA.
# Idempotent: what is there already is only reported.
set -euo pipefail

log() { printf '[setup-test-deps] %s\n' "$*" >&2; }

have_server() {
  local bin
  for bin in /usr/lib/postgresql/*/bin; do
    if [ -x "$bin/initdb" ] && [ -x "$bin/postgres" ] && [ -x "$bin/pg_ctl" ]; then
      echo "$bin"
      return 0
    fi
  done
  return 1
}

have_browser() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && command -v certutil >/dev/null 2>&1
}

install_browser() {
  if have_browser; then
    log "browser already here: $(chromium --version 2>/dev/null | head -n 1), chromedriver, certutil"
    return 0
  fi
  if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    log "no chromium, chromedriver or certutil: install Debian's chromium, chromium-driver and libnss3-tools (as root)"
    exit 1
  fi
  log "installing chromium, chromium-driver, libnss3-tools"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
    libnss3-tools fonts-dejavu-core >/dev/null
  have_browser || { log "apt-get ran but chromium, chromedriver or certutil is still missing"; exit 1; }
}

install_browser
if found=$(have_server); then
  log "PostgreSQL server binaries already here: $found ($("$found/postgres" --version)); nothing to do"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  log "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin and no apt-get (not Debian):"
  log "install PostgreSQL's server package with this system's package manager"
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  log "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: run this as root (sudo) to install them"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "apt-get update"
apt-get update -qq
# postgresql-common first, told not to create (and start) a `main` cluster when a server is installed
log "installing postgresql-common (no default cluster)"
apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
log "installing postgresql (Debian's supported server version)"
apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if found=$(have_server); then
  log "installed: $found ($("$found/postgres" --version))"
else
  log "apt-get installed postgresql but no server binaries appeared under /usr/lib/postgresql/*/bin"
  exit 1
fi
