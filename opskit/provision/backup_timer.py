"""The scheduled backup: `opskit-backup.service` (one run of the backup script as the deploy user)
and `opskit-backup.timer` (it starts the service at the inventory's `backup.schedule`), both in
/etc/systemd/system, rendered by `backup.schedule.units`; the timer enabled and running.

The plan reads the two files and the timer as systemd has it (`is-enabled`, `is-active`, and
`NeedDaemonReload`, which says the manager still runs an older version of a file): a changed file
is written, systemd reloads, and a timer that was running is restarted so the new OnCalendar
applies; a timer that is disabled or stopped is enabled and started. The timer's file is checked
with `systemd-analyze calendar` before it replaces the old one (when that program is there).

No `backup:` section: no timer. Unit files that an earlier run wrote are removed, the timer stopped
and disabled first: the inventory stays the whole truth, and a removed section stops the backups.

The script the service runs (`Layout.backup_script`) is written by the deploy, not here: until the
first deploy after `backup:` is added, a run of the timer fails (and says so in the journal). The
units hold no secret: the script reads them from files (see `backup.schedule`).

Will not: start a backup now, stop a backup that is running, or run `systemd-analyze verify`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backup import schedule
from ..errors import ProvisionRefused
from ..facts.base import Fact, script_text, sections
from ..facts.files import files
from ..layout import Layout
from ..steps import SERVER, Check, Run
from .item import ItemPlan, Wanted, converge_files, shell

NAME = "backup_timer"
TITLE = "the scheduled backup (systemd timer)"

UNIT_DIR = "/etc/systemd/system"
SERVICE = f"{schedule.UNIT}.service"
TIMER = f"{schedule.UNIT}.timer"
SERVICE_FILE = f"{UNIT_DIR}/{SERVICE}"
TIMER_FILE = f"{UNIT_DIR}/{TIMER}"
REMOVED = "backup: section removed: the timer goes"

# the calendar is checked on the new timer file's way in, when systemd-analyze is there (it is in
# Debian's systemd package; a box without it still gets the file, the parser has limited it)
_CHECK_CALENDAR = 'if command -v systemd-analyze >/dev/null 2>&1; then systemd-analyze calendar "$1"; fi'

# The timer as systemd has it; every probe copes with a box without systemctl (`!absent`).
_STATE = r"""
sec systemctl
command -v systemctl || echo '!absent'
sec enabled
systemctl is-enabled "$1" 2>/dev/null
sec active
systemctl is-active "$1" 2>/dev/null
sec reload
for u in "$@"; do
    printf '%s %s\n' "$u" "$(systemctl show -p NeedDaemonReload --value "$u" 2>/dev/null)"
done
true
"""


@dataclass(frozen=True)
class TimerState:
    has_systemctl: bool = True
    enabled: str = ""  # `systemctl is-enabled`: enabled, disabled, masked... ("" or not-found: no unit)
    active: str = ""  # `systemctl is-active`: active, inactive, failed...
    stale: tuple = ()  # the units whose file changed since systemd loaded it (NeedDaemonReload=yes)

    @property
    def is_enabled(self) -> bool:
        return self.enabled == "enabled"

    @property
    def is_active(self) -> bool:
        return self.active == "active"

    @property
    def is_masked(self) -> bool:
        return self.enabled.startswith("masked")


def state() -> Fact:
    """The fact: TimerState of opskit-backup.timer."""
    return Fact("backup_timer_state", ("sh", "-c", script_text() + "\n" + _STATE, "backup_timer_state",
                                       TIMER, SERVICE), lambda out: parse_state(out.text))


def parse_state(text: str) -> TimerState:
    s = sections(text)
    program = s.get("systemctl", "").strip()
    stale = []
    for line in s.get("reload", "").splitlines():
        unit, _, need = line.strip().partition(" ")
        if unit and need.strip() == "yes":
            stale.append(unit)
    return TimerState(program not in ("", "!absent"), s.get("enabled", "").strip(), s.get("active", "").strip(),
                      tuple(stale))


def packages(host) -> tuple:
    return ()


def facts(host) -> tuple:
    return (files(SERVICE_FILE, TIMER_FILE, name="backup_timer_files"), state())


def wanted(host) -> list[Wanted]:
    """The two unit files as the inventory's `backup:` wants them ([] without it)."""
    env = host.env
    backup = getattr(env, "backup", None)
    if backup is None:
        return []
    try:
        texts = schedule.units(Layout(env.remote_dir).backup_script, host.user, backup.schedule,
                               f"opskit backup of {env.project}")
    except schedule.ScheduleError as exc:
        raise ProvisionRefused(f"the backup timer cannot be written: {exc}") from None
    return [Wanted(SERVICE_FILE, texts[SERVICE].encode()),
            Wanted(TIMER_FILE, texts[TIMER].encode(), validate=("sh", "-c", _CHECK_CALENDAR, "calendar",
                                                                backup.schedule))]


def systemctl(title: str, *args: str) -> Run:
    return Run(title, ("systemctl", *args), on=SERVER)


def daemon_reload() -> Run:
    return systemctl("let systemd read the backup units again (daemon-reload)", "daemon-reload")


def plan(host, found: dict, timer: TimerState) -> ItemPlan:
    if getattr(host.env, "backup", None) is None:
        return _without(found, timer)
    changes, steps = converge_files(wanted(host), found)
    if not timer.has_systemctl:
        changes.append("systemctl is not on the server: the scheduled backup needs systemd")
        return ItemPlan(NAME, changes, [Check("backup_timer: systemd must run the server", ("systemctl", "--version"),
                                              hint="the backup timer is a systemd unit: use a systemd distribution")])
    written = bool(steps)
    if timer.stale and not written:
        changes.append(f"systemd runs an older version of {', '.join(timer.stale)} than its file")
    if written or timer.stale:
        steps.append(daemon_reload())
    if timer.is_masked:
        changes.append(f"{TIMER} is {timer.enabled}, wanted enabled")
        steps.append(systemctl(f"unmask {TIMER}", "unmask", TIMER))
    if not timer.is_enabled or not timer.is_active:
        if not timer.is_masked and not timer.is_enabled:
            changes.append(f"{TIMER} is {_said(timer.enabled, 'not installed')}, wanted enabled")
        if not timer.is_active:
            changes.append(f"{TIMER} is {_said(timer.active, 'not running')}, wanted active")
        steps.append(systemctl(f"enable and start {TIMER}", "enable", "--now", TIMER))
    if (written or timer.stale) and timer.is_active:
        # a running timer keeps the schedule it started with: restarted, it takes the new OnCalendar
        steps.append(systemctl(f"restart {TIMER} (its new schedule applies)", "restart", TIMER))
    return ItemPlan(NAME, changes, steps)


def _said(value: str, default: str) -> str:
    return value if value and value != "not-found" else default


def _without(found: dict, timer: TimerState) -> ItemPlan:
    """No `backup:` section: the units of an earlier run go, the timer stopped and disabled first."""
    present = [p for p in (SERVICE_FILE, TIMER_FILE) if found.get(p) is not None and found[p].exists]
    running = timer.has_systemctl and (timer.is_enabled or timer.is_active)
    if not present and not running:
        return ItemPlan(NAME)
    changes, steps = [REMOVED], []
    if running:
        if TIMER_FILE in present:
            steps.append(systemctl(f"stop and disable {TIMER}", "disable", "--now", TIMER))
        else:  # its file is gone already: what systemd still runs is stopped
            steps.append(systemctl(f"stop {TIMER}", "stop", TIMER))
    if present:
        changes += [f"{p}: present, wanted none" for p in present]
        steps.append(shell(f"remove {' '.join(present)}", 'rm -f "$@"', *present))
    if timer.has_systemctl:
        steps.append(daemon_reload())
    return ItemPlan(NAME, changes, steps)
