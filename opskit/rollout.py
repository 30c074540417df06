"""Start-first replacement of a service that serves traffic (the API, the frontend).

Compose recreates a container stop-first: the old one stops, then the new one starts, and for the
seconds between, Caddy has nothing to send requests to. Here the new container starts beside the
old one (`--scale N+1 --no-recreate`: Compose adds a container of the new config and leaves the
old as it is), and only once it is healthy does the old one stop, with its own stop_grace_period
(uvicorn and the frontend close their listener at SIGTERM and finish what is in flight).

Caddy needs no reload: it dials the service's name, which Docker's DNS answers with every running
container of the service; a dial refused by a stopping one goes on to the next address, and a
refused dial is one Caddy retries anyway (`lb_try_duration`).

If the new container does not become healthy, it is removed and the whole release is brought up
stop-first, as before start-first (an upgrade from a release whose other services lack what the new
container needs, seen in CI: Postgres not yet on the frontend's network); if that fails too, the
deploy fails and its recovery brings the previous release back.
"""

from __future__ import annotations

import shlex

from .layout import CONFIG_HASH_LABEL, compose_argv, project_filter
from .smoke import expected_services

# No `--no-deps` in any `up` here: it drops the service's depends_on from its config, so the
# container would not be what the release describes, and the next `up` (or the smoke suite's
# dry run) would recreate it, stop-first. The dependencies run already: `up` leaves them be.
from .steps import SERVER, Run

#: the services Caddy proxies to that are replaced start-first (Flower is an operator's page)
START_FIRST = ("api", "frontend")
WAIT_SECONDS = 300


def script(folder: str, project: str, service: str) -> str:
    """The server-side script (`sh`): started when none runs (a first deploy), nothing when every
    running one already has the new config, else new beside old."""
    compose = shlex.join(compose_argv(folder))
    svc = shlex.quote(service)
    listed = f"docker ps -q {shlex.join(project_filter(project, service))}"
    return f"""set -u
want=$({compose} config --hash {svc} | awk '{{print $2}}')
[ -n "$want" ] || {{ echo "{service}: no such service in the release" >&2; exit 1; }}
# a container of the service that does not run (a crash, an earlier failed start) would be started
# as it is by the scale-up below, old config and all: it serves nothing, it goes
dead=$({listed} -a --filter status=exited --filter status=created --filter status=dead)
[ -z "$dead" ] || docker rm -f $dead >/dev/null
old=$({listed})
if [ -z "$old" ]; then
  echo "{service}: none running; starting it"
  exec {compose} up -d --wait --wait-timeout {WAIT_SECONDS} {svc}
fi
stale=""
for id in $old; do
  [ "$(docker inspect -f '{{{{index .Config.Labels "{CONFIG_HASH_LABEL}"}}}}' "$id")" = "$want" ] || stale="$stale $id"
done
if [ -z "$stale" ]; then echo "{service}: already runs this release"; exit 0; fi
count=$(echo $old | wc -w)
if ! {compose} up -d --no-recreate --scale {svc}=$((count + 1)) --wait --wait-timeout {WAIT_SECONDS} {svc}; then
  new=""
  for id in $({listed} -a); do
    case " $old " in *" $id "*) ;; *) new="$new $id";; esac
  done
  for id in $new; do
    echo "--- the new {service} container's last log lines:" >&2
    docker logs --tail 30 "$id" >&2 2>&1
  done
  [ -z "$new" ] || docker rm -f $new >/dev/null
  # what a release before might lack beside it (a service it needs on a network it was not on)
  # only the whole `up` brings: fall back to it, stop-first, as deploys were before start-first
  echo "{service}: the new container did not become healthy beside the old; it is removed, and the" \
       "whole release is brought up stop-first instead" >&2
  exec {compose} up -d --wait --wait-timeout {WAIT_SECONDS} --remove-orphans
fi
echo "{service}: the new container is healthy beside the old; stopping the old one gracefully"
docker stop $stale >/dev/null && docker rm $stale >/dev/null
"""


#: replaced stop-first on its own, before the others: never two beats, and its new container does
#: not wait for the worker's soft shutdown (one `up` starts no new container before every old one
#: it replaces has stopped)
ON_ITS_OWN = ("beat",)


def the_others(env) -> list[str]:
    """Every service of a release but those replaced start-first or on their own (an `up` of all
    would wait for the worker's stop before it starts anything new)."""
    apart = {*START_FIRST, *ON_ITS_OWN} & set(env.services)
    return [name for name in expected_services(env) if name not in apart]


def on_its_own_step(folder: str, service: str) -> Run:
    return Run(f"replace {service} on its own (stop-first: never two at once)",
               compose_argv(folder, "up", "-d", "--wait", "--wait-timeout", str(WAIT_SECONDS), service),
               on=SERVER, stream=True, timeout=WAIT_SECONDS + 60)


def start_first_step(folder: str, project: str, service: str) -> Run:
    return Run(f"replace {service} start-first (the new container healthy before the old one stops)",
               ["sh", "-c", script(folder, project, service)], on=SERVER, stream=True, timeout=WAIT_SECONDS + 120)
