#!/usr/bin/env bash
# Make sure a Docker engine with Compose v2 and buildx answers on this machine.
# Idempotent: on a laptop with Docker running it only checks and exits.
# Without systemd (CI containers, this sandbox) it installs Debian trixie's engine and starts dockerd.
set -euo pipefail

log() { printf '[setup-docker] %s\n' "$*" >&2; }

engine_answers() { docker info >/dev/null 2>&1; }
compose_v2() { docker compose version >/dev/null 2>&1; }

if engine_answers && compose_v2; then
  log "engine and compose v2 already answer: $(docker version --format '{{.Server.Version}}')"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "no Docker engine answers and this is not root: start Docker yourself (or run as root to install it)"
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! compose_v2; then
  # Bookworm's docker.io is 20.10 with Compose v1 (no `up --wait`); trixie's is 26.1 with Compose v2.
  # Pinned at low priority so nothing else on the machine moves to trixie.
  MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  if [ ! -f /etc/apt/sources.list.d/trixie.sources ]; then
    log "adding Debian trixie (pinned low) from $MIRROR for docker.io, docker-compose, docker-buildx"
    cat > /etc/apt/sources.list.d/trixie.sources <<SRC
Types: deb
URIs: $MIRROR
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie-low
  fi
  log "apt-get update + install (about a minute)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t trixie --no-install-recommends \
    docker.io docker-cli docker-compose docker-buildx containerd runc iptables ca-certificates >/dev/null
fi

# A client in /usr/local/bin may shadow Debian's; compose and buildx plugins live with Debian's CLI.
if ! compose_v2 && [ -x /usr/bin/docker ]; then
  log "the docker on PATH lacks compose v2; Debian's /usr/bin/docker has it"
fi

if ! engine_answers; then
  log "starting dockerd (no systemd here), log in /var/log/dockerd.log"
  nohup dockerd >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    engine_answers && break
    sleep 1
  done
fi

if ! engine_answers; then
  log "dockerd did not answer within 60 s; last lines of /var/log/dockerd.log:"
  tail -n 20 /var/log/dockerd.log >&2 || true
  exit 1
fi
compose_v2 || { log "docker compose v2 is still missing"; exit 1; }
log "ready: engine $(docker version --format '{{.Server.Version}}'), $(docker compose version --short 2>/dev/null | sed 's/^/compose /')"
