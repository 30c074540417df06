"""Changes that could cut the SSH link (sshd's config, the firewall) are made so that the operator
is never locked out, the way `iptables-apply` and `netplan try` do it:

1. `arm`: the files the change touches are copied aside, and a systemd timer on the server is set
   to put them back (and reload what reads them) after `REVERT_AFTER_S` unless it is disarmed;
2. the change is applied;
3. `prove`: a NEW SSH connection as the deploy user, with the pinned host key, from this machine,
   logs in and runs `sudo -n true` (the connection in use stays open meanwhile);
4. `disarm`: the timer is stopped and the copies dropped.

When the proof fails, `provision` runs `revert_now` over the connection it still has; when that
connection is gone too, the timer reverts on its own.
"""

from __future__ import annotations

import sys

from ..steps import LOCAL, SERVER, Run
from .item import STATE_DIR

REVERT_AFTER_S = 120

_ARM = r"""
set -eu
item=$1 seconds=$2 then=$3; shift 3
dir=__STATE__/revert/$item
unit=opskit-revert-$item
systemctl stop "$unit.timer" "$unit.service" 2>/dev/null || true
systemctl reset-failed "$unit.service" "$unit.timer" 2>/dev/null || true
rm -rf "$dir"
mkdir -p "$dir/saved"
: > "$dir/restore"
n=0
for path in "$@"; do
    n=$((n + 1))
    if [ -e "$path" ]; then
        cp -a "$path" "$dir/saved/$n"
        printf 'cp -a %s %s\n' "'$dir/saved/$n'" "'$path'" >> "$dir/restore"
    else
        printf 'rm -f %s\n' "'$path'" >> "$dir/restore"
    fi
done
printf '%s\n' "$then" >> "$dir/restore"
systemd-run --quiet --unit "$unit" --on-active="${seconds}s" --timer-property=AccuracySec=1s \
    /bin/sh "$dir/restore"
""".replace("__STATE__", STATE_DIR)

_DISARM = r"""
unit=opskit-revert-$1
systemctl stop "$unit.timer" 2>/dev/null || true
systemctl reset-failed "$unit.service" "$unit.timer" 2>/dev/null || true
rm -rf "__STATE__/revert/$1"
""".replace("__STATE__", STATE_DIR)

_REVERT_NOW = r"""
set -eu
unit=opskit-revert-$1
systemctl stop "$unit.timer" 2>/dev/null || true
sh "__STATE__/revert/$1/restore"
rm -rf "__STATE__/revert/$1"
""".replace("__STATE__", STATE_DIR)


def arm(item: str, paths: list[str], then: str, seconds: int = REVERT_AFTER_S) -> Run:
    """Keep `paths` as they are now (absent ones are removed on revert) and set the revert timer;
    `then` is the shell command that makes the restored files count (e.g. `systemctl reload ssh`)."""
    return Run(f"{item}: keep the current state and arm a revert in {seconds}s (in case this link is cut)",
               ["sh", "-c", _ARM, "arm", item, str(seconds), then, *paths], on=SERVER)


def is_arm(step) -> bool:
    return isinstance(step, Run) and step.argv[:3] == ("sh", "-c", _ARM)


def prove(item: str, env) -> Run:
    """A new login as the deploy user, with the pinned host key, that runs `sudo -n true`."""
    t = env.ssh
    return Run(f"{item}: prove a NEW SSH login as {t.user} (pinned host key, sudo) still works",
               [sys.executable, "-m", "opskit.provision.prove", t.host, str(t.port), t.user, str(t.key_file),
                str(t.known_hosts)], on=LOCAL, timeout=60)


def disarm(item: str) -> Run:
    return Run(f"{item}: proven; disarm the revert", ["sh", "-c", _DISARM, "disarm", item], on=SERVER)


def revert_now(item: str) -> Run:
    return Run(f"{item}: put the previous state back", ["sh", "-c", _REVERT_NOW, "revert", item], on=SERVER)


def guarded(item: str, paths: list[str], then: str, change: list, env) -> list:
    """`change` (steps) wrapped: arm, change, prove, disarm."""
    return [arm(item, paths, then), *change, prove(item, env), disarm(item)]
