"""The scheduled backup: the same plan `invoke db.backup` runs, rendered once as a shell script
that a systemd timer on the server runs alone (no opskit, no SSH, no Python there).

The plan is built with stand-ins for what only the moment of the run knows, the stamp and the
release `current` points to; the script puts them in. Everything else is the plan's argv, word for
word. A step that carries a secret is refused: the script, its unit files and its journal hold
paths to the secret files only (the password reaches restic as RESTIC_PASSWORD_FILE).
"""

from __future__ import annotations

import re
import shlex

from ..layout import Layout
from ..secrets import Secret
from ..steps import SERVER, Plan, Run

#: what the plan is built with where the run's own stamp and release go
STAMP_NOW = "00000000T000000Z"
RELEASE_NOW = "opskit-release-at-run-time"
UNIT = "opskit-backup"
_CALENDAR = re.compile(r"^[A-Za-z0-9*:/,. ~-]{1,100}$")
_DELIMITER = "OPSKIT_STDIN"
LOCK_WAIT_S = 3600


def lock_file(remote_dir: str) -> str:
    return f"{Layout(remote_dir).backups}/.lock"


class ScheduleError(ValueError):
    """A plan or setting the timer cannot run as asked."""


def script(plan: Plan, remote_dir: str) -> str:
    """A POSIX sh script that runs `plan` step by step, stopping at the first failure (`set -e`),
    each step announced on its own line for the journal."""
    current = Layout(remote_dir).current
    name = _comment(plan.name).replace(STAMP_NOW, "<stamp>").replace(RELEASE_NOW, "<release>")
    lines = ["#!/bin/sh", f"# {UNIT}: made by opskit from the plan `{name}`;",
             "# the inventory's `backup:` section is the source: edit there, deploy, never here.",
             "set -eu",
             # one backup at a time: the timer's and a deploy's pre-migration one wait for each other
             f"mkdir -p {shlex.quote(Layout(remote_dir).backups)}",
             f"exec 9>>{shlex.quote(lock_file(remote_dir))}",
             f'flock -w {LOCK_WAIT_S} 9 || {{ echo "another backup held the lock for {LOCK_WAIT_S}s" >&2; exit 1; }}',
             "stamp=$(date -u +%Y%m%dT%H%M%SZ)",
             f"release=$(basename \"$(readlink {shlex.quote(current)})\" 2>/dev/null) || release=none",
             '[ -n "$release" ] || release=none',
             'echo "backup $stamp of release $release"']
    for i, step in enumerate(plan, 1):
        if not isinstance(step, Run) or step.on != SERVER:
            raise ScheduleError(f"step {i} ({step.title}): only server commands can run from a timer")
        if isinstance(step.stdin, Secret) or any(isinstance(a, Secret) for a in step.argv):
            raise ScheduleError(f"step {i} ({step.title}) carries a secret: a scheduled script holds none")
        lines.append(f"echo {_word(f'==> [{i}/{len(plan)}] {step.title}')}")
        command = " ".join(_word(str(a)) for a in step.argv)
        if step.stdin is not None:
            text = step.stdin.decode() if isinstance(step.stdin, bytes) else str(step.stdin)
            delimiter = f"{_DELIMITER}_{i}"
            if any(line == delimiter for line in text.splitlines()) or not text.endswith("\n"):
                raise ScheduleError(f"step {i} ({step.title}): its input cannot be a here-document")
            command += f" <<'{delimiter}'\n{text}{delimiter}"
        lines.append(command)
    lines.append('echo "backup $stamp done"')
    return "\n".join(lines) + "\n"


def _word(text: str) -> str:
    """One argv word for sh: quoted as is, or, holding a stand-in, in double quotes around the
    variable that replaces it."""
    if STAMP_NOW not in text and RELEASE_NOW not in text:
        return shlex.quote(text)
    escaped = re.sub(r'(["\\$`])', r"\\\1", text)
    return '"' + escaped.replace(STAMP_NOW, "${stamp}").replace(RELEASE_NOW, "${release}") + '"'


def _comment(text: str) -> str:
    return re.sub(r"[\r\n]", " ", text)


def units(script_path: str, user: str, on_calendar: str, description: str) -> dict[str, str]:
    """systemd units: the service runs the script once as `user` (in the docker group), the timer
    starts it at `on_calendar` (systemd.time, e.g. `*-*-* 03:15:00`), and after downtime at once
    (`Persistent`): a backup missed while the server was off runs when it is back."""
    if not _CALENDAR.match(on_calendar):
        raise ScheduleError(f"backup.schedule: {on_calendar!r} is not a systemd calendar event such as "
                            "`*-*-* 03:15:00` or `daily`")
    if not re.match(r"^[a-z_][a-z0-9_-]{0,31}$", user) or not script_path.startswith("/") or \
            re.search(r"\s", script_path):
        raise ScheduleError("the backup's user and script path must be a plain user name and an absolute path")
    description = _comment(description)
    service = (f"[Unit]\nDescription={description}\nAfter=docker.service network-online.target\n"
               "Wants=network-online.target\nRequires=docker.service\n\n"
               f"[Service]\nType=oneshot\nUser={user}\nExecStart=/bin/sh {script_path}\n"
               # a backup yields to the app: lowest CPU and disk priority, and a bound on its time
               "Nice=15\nIOSchedulingClass=idle\nTimeoutStartSec=4h\nUMask=0077\n")
    timer = (f"[Unit]\nDescription={description} (schedule)\n\n"
             f"[Timer]\nOnCalendar={on_calendar}\nPersistent=true\nRandomizedDelaySec=10min\n"
             f"Unit={UNIT}.service\n\n[Install]\nWantedBy=timers.target\n")
    return {f"{UNIT}.service": service, f"{UNIT}.timer": timer}
