"""Replacing the services of a release without anyone noticing: one server step, its jobs side by
side (the API and the frontend start-first, the worker overlapped, beat stop-first on its own, the
rest in one `up`).

Compose recreates a container stop-first: the old one stops, then the new one starts, and for the
seconds between, Caddy has nothing to send requests to. For the API and the frontend the new
container starts beside the old one (`--scale N+1 --no-recreate`: Compose adds a container of the
new config and leaves the old as it is), and only once it is healthy does the old one stop, with its
own stop_grace_period (uvicorn and the frontend close their listener at SIGTERM and finish what is
in flight).

The worker serves a queue, not requests: stop-first, the queue waits for the old worker's warm
shutdown (up to its soft shutdown while a long task runs) and then for the new one's boot. Here the
new worker starts beside the old, which is told to stop at that moment: it takes no new task from
then on and finishes or hands back what it runs while the new one boots, so the queue waits for the
boot alone and the step for the longer of the two. (Stopping the old one only once the new is
healthy would leave no wait at all, but the old worker would take tasks meanwhile that its stop
then hands back half done, and the deploy would last the boot plus the warm shutdown.)

Caddy needs no reload: it dials the service's name, which Docker's DNS answers with every running
container of the service; a dial refused by a stopping one goes on to the next address, and a
refused dial is one Caddy retries anyway (`lb_try_duration`).

The jobs run at once because one `up` starts no new container before every old one it replaces
has stopped: in one `up`, the worker's soft shutdown held the new beat back (a 50 s beat gap), and
one after the other they took the sum of their times. They share nothing: each names its own
services, whose dependencies (Postgres, Redis) `deploy.start_stores` brought up just before (in a
deploy, a rollback and a recovery).

If a new API, frontend or worker container does not become healthy, it is removed (the old API or
frontend serves on, the old worker has stopped already), and once the jobs are over the whole
release is brought up stop-first, as before start-first (an upgrade from a release whose other
services lack what the new container needs, seen in CI: Postgres not yet on the frontend's
network); if that fails too, the deploy fails and its recovery brings the previous release back.
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
#: the exit code of a start-first job whose new container was removed: the whole `up` is due
FALL_BACK = 3


def script(folder: str, project: str, service: str, overlap: bool = False) -> str:
    """The server-side script (`sh`) of one service replaced beside its old container: started when
    none runs (a first deploy), nothing when every running one already has the new config, else
    the new one beside the old; exit FALL_BACK when the new one was not healthy (it is removed).

    Start-first (`overlap` false: the API, the frontend): the old container stops once the new one
    is healthy, untouched if it never is. Overlapped (the worker, `OVERLAPPED`): the old one is told
    to stop as the new one starts, and its warm shutdown runs while the new one boots."""
    compose = shlex.join(compose_argv(folder))
    svc = shlex.quote(service)
    listed = f"docker ps -q {shlex.join(project_filter(project, service))}"
    head = f"""set -u
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
fail() {{
  new=""
  for id in $({listed} -a); do
    case " $old " in *" $id "*) ;; *) new="$new $id";; esac
  done
  for id in $new; do
    echo "--- the new {service} container's last log lines:" >&2
    docker logs --tail 30 "$id" >&2 2>&1
  done
  [ -z "$new" ] || docker rm -f $new >/dev/null
  echo "{service}: $1; it is removed" >&2
  exit {FALL_BACK}
}}
"""
    if not overlap:
        return head + f"""{compose} up -d --no-recreate --scale {svc}=$((count + 1)) --wait \
  --wait-timeout {WAIT_SECONDS} {svc} || fail "the new container did not become healthy beside the old"
echo "{service}: the new container is healthy beside the old; stopping the old one gracefully"
docker stop $stale >/dev/null && docker rm $stale >/dev/null
"""
    # `up --wait` would wait on the stopping old container too: the new one's health is polled
    health = "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
    return head + f"""{compose} up -d --no-recreate --scale {svc}=$((count + 1)) {svc} ||
  fail "the new container did not start"
fresh=""
for id in $({listed}); do
  case " $old " in *" $id "*) ;; *) fresh="$fresh $id";; esac
done
[ -n "$fresh" ] || fail "no new container came up"
echo "{service}: the new container started; the old one stops gracefully (warm shutdown) while it boots"
docker stop $stale >/dev/null & stopping=$!
deadline=$(($(date +%s) + {WAIT_SECONDS}))
for id in $fresh; do
  while :; do
    state=$(docker inspect -f '{health}' "$id")
    # `running` only for a container with no healthcheck: its start is all there is to wait for
    case $state in
      healthy|running) break;;
      unhealthy|exited|dead|"") wait $stopping; fail "the new container is $state";;
    esac
    [ "$(date +%s)" -lt $deadline ] ||
      {{ wait $stopping; fail "the new container was not healthy within {WAIT_SECONDS}s"; }}
    sleep 0.5
  done
done
wait $stopping && docker rm $stale >/dev/null || {{ echo "{service}: the old container did not stop" >&2; exit 1; }}
echo "{service}: the new container is healthy, the old one stopped"
"""


#: replaced overlapped (`script`): the old one is told to stop as its successor starts, so the queue
#: waits for the new one's boot, not for the old one's warm shutdown and then the boot
OVERLAPPED = ("worker",)

#: replaced stop-first in an `up` of its own: never two beats, and its new container does not wait
#: for the worker's soft shutdown (one `up` starts no new container before every old one it
#: replaces has stopped)
ON_ITS_OWN = ("beat",)


def the_others(env) -> list[str]:
    """Every service of a release but those replaced start-first or on their own: one `up`."""
    apart = {*START_FIRST, *OVERLAPPED, *ON_ITS_OWN} & set(env.services)
    return [name for name in expected_services(env) if name not in apart]


#: the release's service names, from `docker compose config` (normalised YAML: a top-level
#: `services:` whose entries are two spaces in)
SERVICE_NAMES_AWK = '/^[^ ]/ { top = $1 } top == "services:" && /^  [^ ]/ { sub(/:$/, "", $1); print $1 }'

#: the engine's names of the release's networks, from `docker compose config` (normalised YAML: a
#: top-level `networks:` whose entries each carry `name:` four spaces in); Compose 2.26, the one
#: Debian ships, has no `config --networks`
NETWORK_NAMES_AWK = '/^[^ ]/ { top = $1 } top == "networks:" && /^    name: / { print $2 }'


def replace_script(env, folder: str) -> str:
    """Every job in the background, each line of its output marked with its name; then, if a
    start-first job fell back, the whole release's `up`; the exit code is 1 when a job failed.
    The jobs are those of the services the release in `folder` has (read from its compose file:
    a rollback's release may have other services than today's inventory), "others" being the rest.
    When a network of the release does not exist yet (a first deploy, a release that adds one), the
    jobs run one after another: two `up`s would both create it, and the second would fail."""
    compose = shlex.join(compose_argv(folder))
    whole = shlex.join(compose_argv(folder, "up", "-d", "--wait", "--wait-timeout", str(WAIT_SECONDS),
                                    "--remove-orphans"))
    up = shlex.join(compose_argv(folder, "up", "-d", "--wait", "--wait-timeout", str(WAIT_SECONDS)))
    apart = (*START_FIRST, *OVERLAPPED, *ON_ITS_OWN)
    lines = ["set -u", "codes=$(mktemp -d)", "trap 'rm -rf \"$codes\"' EXIT",
             # the exit code goes to a file: a pipeline's status in sh is its last command's (sed's)
             'job() { { sh -c "$2"; echo $? > "$codes/$1"; } 2>&1 | sed -u "s/^/[$1] /"; }',
             f"conf=$({compose} config) || {{ echo 'the release compose file does not load' >&2; exit 1; }}",
             f'nets=$(printf "%s\\n" "$conf" | awk {shlex.quote(NETWORK_NAMES_AWK)})',
             f'services=" $(printf "%s\\n" "$conf" | awk {shlex.quote(SERVICE_NAMES_AWK)} | tr "\\n" " ")"',
             "others=''",
             "for s in $services; do",
             f'  case " {" ".join(apart)} " in *" $s "*) ;; *) others="$others $s";; esac',
             "done",
             "todo=''"]
    lines += [f'case "$services" in *" {name} "*) todo="$todo {name}";; esac' for name in apart]
    lines += ['[ -z "$others" ] || todo="$todo others"',
              "new=''",
              "for net in $nets; do",
              '  docker network inspect "$net" >/dev/null 2>&1 || new="$new $net"',
              "done",
              'if [ -n "$new" ]; then echo "new network(s)$new: one job after another"; fi',
              "run() {",
              '  case "$1" in']
    lines += [f"    {name}) job {name} {shlex.quote(script(folder, env.project, name))};;" for name in START_FIRST]
    lines += [f"    {name}) job {name} {shlex.quote(script(folder, env.project, name, overlap=True))};;"
              for name in OVERLAPPED]
    lines += [f"    {name}) job {name} {shlex.quote(f'exec {up} {shlex.quote(name)}')};;" for name in ON_ITS_OWN]
    lines += [f'    others) job others {shlex.quote(f"exec {up} --remove-orphans")}"$others";;',
              "  esac",
              "}",
              "for name in $todo; do",
              '  if [ -z "$new" ]; then run "$name" & else run "$name"; fi',
              "done",
              "wait",
              "failed=''; fall_back=''",
              "for name in $todo; do",
              '  code=$(cat "$codes/$name" 2>/dev/null || echo 1)',
              f'  if [ "$code" = {FALL_BACK} ]; then fall_back="$fall_back $name";',
              '  elif [ "$code" != 0 ]; then failed="$failed $name"; fi',
              "done",
              'if [ -n "$failed" ]; then echo "failed:$failed" >&2; exit 1; fi',
              'if [ -n "$fall_back" ]; then',
              # what a release before might lack beside the new container (a service it needs on a
              # network it was not on) only the whole `up` brings: stop-first, as before start-first
              '  echo "the new container of$fall_back was not healthy beside the old one: the whole release'
              ' is brought up stop-first instead" >&2',
              f"  exec {whole}",
              "fi"]
    return "\n".join(lines) + "\n"


def replace_step(env, folder: str, title: str = "") -> Run:
    named = [f"{', '.join(n for n in START_FIRST if n in env.services)} start-first",
             *(f"{n} overlapped" for n in OVERLAPPED if n in env.services),
             *(f"{n} stop-first on its own" for n in ON_ITS_OWN if n in env.services), "the others in one up"]
    return Run(title or f"replace the services side by side: {'; '.join(named)}",
               ["sh", "-c", replace_script(env, folder)], on=SERVER, stream=True, timeout=2 * WAIT_SECONDS + 120)
