"""Docker's daemon settings (/etc/docker/daemon.json): `live-restore` (containers keep running while
dockerd restarts or is upgraded), a default json-file log cap from the inventory's `logging`,
`userland-proxy` off, `no-new-privileges` for every container.

The file is checked with `dockerd --validate` before it replaces the old one, and dockerd is
touched only when the file changed or the running daemon reports other settings than the file's.
Containers survive that: a reload (SIGHUP) first gives the running daemon the live-restore it is
meant to have, then a restart, only when a key that a reload does not apply changed. The reload
comes first with live-restore wanted off too: a daemon that stops with it on leaves its containers
running, and one that starts with it off then kills them and cancels their restart policy (seen
on Engine 26.1: "ShouldRestart failed ... restart canceled"); stopping with it off stops them
cleanly, and the new daemon restarts them by their policy.

Keys of daemon.json that are not ours (registry mirrors, data-root...) are kept; ours replace
whatever was there. On a bare host (no dockerd yet) the file is written first and dockerd starts
with it; should dockerd be running by the time the step runs, it is restarted to take it.

Will not: start a dockerd that someone stopped, or touch /etc/default/docker (DOCKER_OPTS).
no-new-privileges applies to containers created after the restart (a deploy recreates them).
"""

from __future__ import annotations

import json

from ..facts import system
from ..facts.files import files
from ..steps import SERVER, Run
from .item import ItemPlan, Wanted, converge_files, put

NAME = "dockerd"
TITLE = "Docker daemon settings"

DAEMON_JSON = "/etc/docker/daemon.json"

#: The daemon.json keys that a reload (SIGHUP) applies in Engine 26.1: moby v26.1.5
#: daemon/reload.go (`Daemon.Reload`: debug, max-concurrent-*, max-download-attempts,
#: shutdown-timeout, features, labels, registry options, live-restore, network-diagnostic-port)
#: and daemon/reload_unix.go (`reloadPlatform`: runtimes, default-runtime, default-shm-size,
#: default-ipc-mode, default-cgroupns-mode). Any other key takes a restart: of ours, log-driver,
#: log-opts, userland-proxy and no-new-privileges.
RELOADABLE = frozenset({
    "debug", "max-concurrent-downloads", "max-concurrent-uploads", "max-download-attempts", "shutdown-timeout",
    "features", "labels", "allow-nondistributable-artifacts", "insecure-registries", "registry-mirrors",
    "live-restore", "network-diagnostic-port", "runtimes", "default-runtime", "default-shm-size",
    "default-ipc-mode", "default-cgroupns-mode",
})
#: what dockerd does for our keys when daemon.json does not name them
DEFAULTS = {"live-restore": False, "log-driver": "json-file", "log-opts": {}, "userland-proxy": True,
            "no-new-privileges": False}

VALIDATE = ("dockerd", "--validate", "--config-file", "%s")
# no dockerd yet when the facts were read: validate if the packages item has installed it since
VALIDATE_IF_INSTALLED = ("sh", "-c", 'if command -v dockerd >/dev/null 2>&1; then exec dockerd --validate '
                                     '--config-file "$1"; fi', "validate", "%s")


def packages(host) -> tuple:
    return ()


def facts(host) -> tuple:
    return (files(DAEMON_JSON, name="dockerd_files"), system.dockerd())


def ours(host) -> dict:
    s, logging = host.settings, host.env.logging
    return {
        "live-restore": s.live_restore,
        "log-driver": "json-file",
        "log-opts": {"max-size": logging.max_size, "max-file": str(logging.max_files)},
        "userland-proxy": s.userland_proxy,
        "no-new-privileges": s.no_new_privileges,
    }


def render(config: dict) -> str:
    """Deterministic JSON: sorted keys, two-space indent, a final newline."""
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def parse_current(state) -> tuple[dict | None, bool]:
    """(the daemon.json on the server as a dict or None, whether it is broken: not a JSON object)."""
    if state is None or not state.exists:
        return None, False
    try:
        value = json.loads(state.content.decode())
    except (ValueError, UnicodeDecodeError):
        return None, True
    return (value, False) if isinstance(value, dict) else (None, True)


def restart_keys(old: dict | None, new: dict) -> list[str]:
    """The keys whose change a reload does not apply (None: the old settings are unknown)."""
    if old is None:
        old = {}
    before, after = {**DEFAULTS, **old}, {**DEFAULTS, **new}
    return sorted(k for k in set(before) | set(after) if k not in RELOADABLE and before.get(k) != after.get(k))


def running_differences(d: system.Dockerd, new: dict) -> tuple[list[str], list[str]]:
    """What the running daemon reports against `new`: (change lines, keys that take a restart)."""
    lines, keys = [], []
    if d.live_restore != new["live-restore"]:
        lines.append(f"dockerd runs with live-restore {_on(d.live_restore)}, wanted {_on(new['live-restore'])}")
    if d.logging_driver != new["log-driver"]:
        lines.append(f"dockerd runs with log-driver {d.logging_driver}, wanted {new['log-driver']}")
        keys.append("log-driver")
    if d.no_new_privileges != new["no-new-privileges"]:
        lines.append(f"dockerd runs with no-new-privileges {_on(d.no_new_privileges)}, "
                     f"wanted {_on(new['no-new-privileges'])}")
        keys.append("no-new-privileges")
    return lines, keys


def _on(value) -> str:
    return "on" if value else "off"


# The reload is a SIGHUP (docker.service: ExecReload=kill -s HUP), handled in the background:
# `reload_to` waits until the daemon reports the live-restore it was given, so that a restart
# after it finds the daemon as the module's docstring says it must be.
_RELOAD_TO = r"""
# wait_until TRIES PAUSE WHAT CMD...: CMD until it succeeds, at most TRIES times PAUSE seconds apart
wait_until() {
    tries=$1 pause=$2 what=$3; shift 3
    i=0
    until "$@"; do
        i=$((i + 1))
        if [ "$i" -gt "$tries" ]; then
            echo "$what (see journalctl -u docker)" >&2
            exit 1
        fi
        sleep "$pause"
    done
}
live_restore_is() { [ "$(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null)" = "$1" ]; }
answers() { docker info >/dev/null 2>&1; }
reload_to() {
    systemctl reload docker
    wait_until 150 0.1 "dockerd did not take live-restore=$1 within 15 s of a reload" live_restore_is "$1"
}
"""

_RELOAD = _RELOAD_TO + 'set -eu\nreload_to "$1"\n'

# $1 = when: `always`, or `if-running` (no dockerd when the facts were read; the packages item may
# have installed and started it since, with Docker's defaults: reloaded first, like any other).
# reset-failed first: docker.service refuses a 4th start within 60 s (StartLimitBurst), and this
# restart is on purpose, right after an install that started it.
_RESTART = _RELOAD_TO + r"""
set -eu
when=$1 want=$2
if [ "$when" = if-running ]; then
    if ! systemctl is-active --quiet docker 2>/dev/null; then
        echo "dockerd is not running: it starts with the new daemon.json"
        exit 0
    fi
    reload_to "$want"
fi
systemctl reset-failed docker.service 2>/dev/null || true
systemctl restart docker
wait_until 60 1 "dockerd did not answer within 60 s of its restart" answers
"""


def reload(live_restore: bool) -> Run:
    return Run("reload dockerd (SIGHUP: applies live-restore to the running daemon)",
               ("sh", "-c", _RELOAD, "reload", "true" if live_restore else "false"), on=SERVER, timeout=60)


def restart(live_restore: bool, keys: list[str], when: str = "always") -> Run:
    why = f"for {', '.join(keys)}" if keys else "to take daemon.json"
    keep = "live-restore keeps the containers running" if live_restore else \
        "live-restore is off: running containers restart too"
    title = f"restart dockerd {why} ({keep})" if when == "always" else \
        f"restart dockerd if it was started since the facts were read ({keep})"
    return Run(title, ("sh", "-c", _RESTART, "restart", when, "true" if live_restore else "false"), on=SERVER,
               timeout=120)


def plan(host, found: dict, d: system.Dockerd) -> ItemPlan:
    state = found.get(DAEMON_JSON)
    old, broken = parse_current(state)
    new = {**(old or {}), **ours(host)}
    text = render(new)
    wanted = Wanted(DAEMON_JSON, text.encode(), validate=VALIDATE if d.installed else VALIDATE_IF_INSTALLED)
    changes, steps = converge_files([wanted], found)
    if broken:
        changes.insert(0, f"{DAEMON_JSON} is not a JSON object: it is replaced whole")
    content_changed = state is None or not state.exists or state.content != text.encode()
    live_restore = new["live-restore"]
    notes = []
    if not d.installed:
        notes.append(f"dockerd is not installed yet: it starts with {DAEMON_JSON} once installed")
        if content_changed:
            steps.append(restart(live_restore, [], when="if-running"))
        return ItemPlan(NAME, changes, steps, notes=notes)
    if not d.answers:
        if d.unit == "failed" and content_changed:
            steps.append(restart(live_restore, [], when="always"))
        else:
            notes.append(f"dockerd is not running ({d.unit}): it reads {DAEMON_JSON} when it starts")
        return ItemPlan(NAME, changes, steps, notes=notes)
    running, keys = running_differences(d, new)
    changes += running
    if content_changed:
        keys = sorted(set(keys) | set(restart_keys(None if broken else old, new)))
    live_restore_differs = d.live_restore != live_restore
    if keys and live_restore_differs and content_changed and not broken:
        # a reload applies nothing of a file that fails its check, and Engine 26.1 (Debian's) fails
        # any with "userland-proxy": true on a reload ("userland-proxy-path is not set"): so
        # live-restore goes first, alone, in the running daemon's file without that key (a reload
        # never applies it anyway); then the whole file and the restart
        kept = {k: v for k, v in (old or {}).items() if k != "userland-proxy"}
        interim = Wanted(DAEMON_JSON, render({**kept, "live-restore": live_restore}).encode(), validate=VALIDATE)
        steps = [put(f"write {DAEMON_JSON} with only live-restore changed", interim), reload(live_restore),
                 *steps]
    elif content_changed or live_restore_differs:
        steps.append(reload(live_restore))
    if keys:
        steps.append(restart(live_restore, keys))
    return ItemPlan(NAME, changes, steps, notes=notes)
