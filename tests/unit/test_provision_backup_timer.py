"""The backup_timer item's plan, from parsed facts: the two unit files and the timer as systemd has
it; with a `backup:` section the timer is installed, enabled and running, without one it goes. The
fact's probe runs here against a stand-in `systemctl`."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess

import pytest

from opskit.errors import ProvisionRefused
from opskit.facts.base import Output
from opskit.facts.files import FileState
from opskit.inventory.model import Backup
from opskit.layout import Layout
from opskit.provision import backup_timer as bt
from opskit.provision.item import Host

from .provision_host import make_host

ON = bt.TimerState(True, "enabled", "active")
FRESH = bt.TimerState(True, "", "inactive")


@pytest.fixture
def host(env):
    def make(schedule: str | None = "*-*-* 03:15:00") -> Host:
        h = make_host(env)
        backup = None if schedule is None else Backup("sftp:u123@u123.your-storagebox.de:/backups", schedule=schedule)
        return dataclasses.replace(h, env=dataclasses.replace(h.env, backup=backup))
    return make


def converged(h: Host) -> dict:
    return {w.path: FileState(w.path, w.content, 0o644, "root", "root") for w in bt.wanted(h)}


def missing() -> dict:
    return {p: FileState(p, None) for p in (bt.SERVICE_FILE, bt.TIMER_FILE)}


def argvs(p) -> list:
    return [tuple(s.argv) if s.argv[0] == "systemctl" else ("write", s.argv[4]) if s.argv[3] == "install"
            else ("sh", *s.argv[4:]) for s in p.steps]


# -- the unit files ------------------------------------------------------------------------------------


def test_the_units_run_the_deployed_script_as_the_deploy_user_on_the_inventorys_schedule(host, env):
    h = host("Mon..Fri *-*-* 02:00:00")
    files = {w.path: w for w in bt.wanted(h)}
    assert set(files) == {"/etc/systemd/system/opskit-backup.service", "/etc/systemd/system/opskit-backup.timer"}
    assert all((w.mode, w.owner, w.group) == (0o644, "root", "root") for w in files.values())
    service = files[bt.SERVICE_FILE].content.decode()
    timer = files[bt.TIMER_FILE].content.decode()
    script = Layout(env.remote_dir).backup_script
    assert script == f"{env.remote_dir}/backups/bin/backup.sh"
    assert f"ExecStart=/bin/sh {script}\n" in service and f"User={h.user}\n" in service
    assert "Type=oneshot\n" in service and f"Description=opskit backup of {env.project}\n" in service
    assert "OnCalendar=Mon..Fri *-*-* 02:00:00\n" in timer and "WantedBy=timers.target" in timer


def test_the_units_hold_no_secret(host):
    for w in bt.wanted(host()):
        text = w.content.decode()
        assert "PASSWORD" not in text.upper() and "secret" not in text.lower(), w.path


def test_the_calendar_is_checked_as_one_word_before_the_timer_file_replaces_the_old_one(host):
    h = host("*-*~01 03:15:00")
    timer = {w.path: w for w in bt.wanted(h)}[bt.TIMER_FILE]
    # the install script runs the joined validate argv with `sh -c`: the expression stays one word
    words = shlex.split(shlex.join(timer.validate))
    assert words[:2] == ["sh", "-c"] and "systemd-analyze calendar" in words[2] and words[-1] == "*-*~01 03:15:00"
    assert "%s" not in timer.validate[2]  # the install script puts the temp file's path where %s is
    assert {w.path: w for w in bt.wanted(h)}[bt.SERVICE_FILE].validate == ()


@pytest.mark.parametrize("schedule", ["03:15; rm -rf /", "$(reboot)", "daily\nExecStart=/bin/evil", "`id`",
                                      "x" * 101, ""])
def test_a_weird_calendar_is_refused_before_anything_is_written(host, schedule):
    h = host(schedule)
    with pytest.raises(ProvisionRefused, match="backup.schedule"):
        bt.plan(h, missing(), FRESH)


# -- the plan with `backup:` ---------------------------------------------------------------------------


def test_a_fresh_host_gets_both_files_a_reload_and_the_timer_enabled(host):
    h = host()
    p = bt.plan(h, missing(), FRESH)
    assert argvs(p) == [("write", bt.SERVICE_FILE), ("write", bt.TIMER_FILE), ("systemctl", "daemon-reload"),
                        ("systemctl", "enable", "--now", "opskit-backup.timer")]
    assert p.steps[1].stdin == {w.path: w for w in bt.wanted(h)}[bt.TIMER_FILE].content
    assert f"{bt.SERVICE_FILE}: missing" in p.changes and f"{bt.TIMER_FILE}: missing" in p.changes
    assert "opskit-backup.timer is not installed, wanted enabled" in p.changes
    assert "opskit-backup.timer is inactive, wanted active" in p.changes


def test_a_converged_host_has_nothing_to_do(host):
    h = host()
    p = bt.plan(h, converged(h), ON)
    assert p.changes == () and p.steps == () and p.notes == ()


def test_a_changed_schedule_rewrites_the_timer_reloads_and_restarts_it(host):
    old = host("*-*-* 03:15:00")
    p = bt.plan(host("*-*-* 04:30:00"), converged(old), ON)
    assert p.changes == (f"{bt.TIMER_FILE}: content differs",)
    assert argvs(p) == [("write", bt.TIMER_FILE), ("systemctl", "daemon-reload"),
                        ("systemctl", "restart", "opskit-backup.timer")]


def test_a_disabled_timer_with_the_right_files_is_only_enabled(host):
    h = host()
    p = bt.plan(h, converged(h), bt.TimerState(True, "disabled", "inactive"))
    assert argvs(p) == [("systemctl", "enable", "--now", "opskit-backup.timer")]
    assert p.changes == ("opskit-backup.timer is disabled, wanted enabled",
                         "opskit-backup.timer is inactive, wanted active")


def test_an_enabled_but_stopped_timer_is_started(host):
    h = host()
    p = bt.plan(h, converged(h), bt.TimerState(True, "enabled", "failed"))
    assert p.changes == ("opskit-backup.timer is failed, wanted active",)
    assert argvs(p) == [("systemctl", "enable", "--now", "opskit-backup.timer")]


def test_a_masked_timer_is_unmasked_then_enabled(host):
    h = host()
    p = bt.plan(h, converged(h), bt.TimerState(True, "masked", "inactive"))
    assert argvs(p) == [("systemctl", "unmask", "opskit-backup.timer"),
                        ("systemctl", "enable", "--now", "opskit-backup.timer")]


def test_files_written_but_never_reloaded_are_reloaded_and_the_timer_restarted(host):
    # an earlier run wrote the file and stopped before daemon-reload: the file is right, systemd is not
    h = host()
    p = bt.plan(h, converged(h), bt.TimerState(True, "enabled", "active", ("opskit-backup.timer",)))
    assert p.changes == ("systemd runs an older version of opskit-backup.timer than its file",)
    assert argvs(p) == [("systemctl", "daemon-reload"), ("systemctl", "restart", "opskit-backup.timer")]


def test_a_file_with_the_wrong_mode_is_rewritten(host):
    h = host()
    found = converged(h)
    found[bt.SERVICE_FILE] = dataclasses.replace(found[bt.SERVICE_FILE], mode=0o666)
    p = bt.plan(h, found, ON)
    assert p.changes == (f"{bt.SERVICE_FILE}: mode 0666, wanted 0644",)
    assert argvs(p)[:2] == [("write", bt.SERVICE_FILE), ("systemctl", "daemon-reload")]


def test_a_host_without_systemd_is_told_so(host):
    p = bt.plan(host(), missing(), bt.TimerState(False))
    assert "systemctl is not on the server: the scheduled backup needs systemd" in p.changes


# -- the plan without `backup:` ------------------------------------------------------------------------


def test_a_removed_backup_section_stops_disables_and_removes_the_timer(host):
    h = host()
    p = bt.plan(host(None), converged(h), ON)
    assert p.changes[0] == "backup: section removed: the timer goes"
    assert argvs(p) == [("systemctl", "disable", "--now", "opskit-backup.timer"),
                        ("sh", bt.SERVICE_FILE, bt.TIMER_FILE), ("systemctl", "daemon-reload")]
    assert p.steps[1].argv[2] == 'rm -f "$@"'


def test_without_backup_and_without_units_nothing_happens(host):
    p = bt.plan(host(None), missing(), FRESH)
    assert p.changes == () and p.steps == ()
    # not-found, as newer systemctl says it, is no unit either
    assert bt.plan(host(None), missing(), bt.TimerState(True, "not-found", "inactive")).steps == ()


def test_without_backup_a_disabled_leftover_file_is_removed_without_disabling(host):
    h = host()
    found = converged(h)
    found[bt.TIMER_FILE] = FileState(bt.TIMER_FILE, None)
    p = bt.plan(host(None), found, bt.TimerState(True, "", "inactive"))
    assert argvs(p) == [("sh", bt.SERVICE_FILE), ("systemctl", "daemon-reload")]


def test_a_second_run_after_removal_has_nothing_to_do(host):
    assert bt.plan(host(None), missing(), bt.TimerState(True, "", "inactive")).steps == ()


# -- the fact --------------------------------------------------------------------------------------------


def test_the_state_is_parsed_from_the_probes_sections():
    text = ("\n=====opskit:systemctl=====\n/usr/bin/systemctl\n=====opskit:enabled=====\nenabled\n"
            "=====opskit:active=====\nactive\n=====opskit:reload=====\n"
            "opskit-backup.timer yes\nopskit-backup.service no\n")
    assert bt.parse_state(text) == bt.TimerState(True, "enabled", "active", ("opskit-backup.timer",))
    assert bt.parse_state("\n=====opskit:systemctl=====\n!absent\n") == bt.TimerState(False, "", "", ())


def test_the_probe_reads_the_timer_through_systemctl(tmp_path):
    fake = tmp_path / "systemctl"
    fake.write_text('#!/bin/sh\necho "$*" >> "$LOG"\ncase "$1" in\n  is-enabled) echo disabled; exit 1;;\n'
                    '  is-active) echo inactive; exit 3;;\n  show) echo no;;\nesac\n')
    fake.chmod(0o755)
    fact = bt.state()
    assert fact.argv[-2:] == ("opskit-backup.timer", "opskit-backup.service")
    log = tmp_path / "log"
    done = subprocess.run(list(fact.argv), check=False, capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", "LOG": str(log)})
    assert done.returncode == 0, done.stderr
    found = fact.parse(Output(done.stdout))
    assert found.has_systemctl and (found.enabled, found.active, found.stale) == ("disabled", "inactive", ())
    assert "is-enabled opskit-backup.timer" in log.read_text()
    assert "show -p NeedDaemonReload --value opskit-backup.service" in log.read_text()


def test_the_item_reads_both_files_and_the_timer(host):
    names = [f.name for f in bt.facts(host())]
    assert names == ["backup_timer_files", "backup_timer_state"]
    assert bt.packages(host()) == ()
    assert (bt.NAME, bt.TITLE) == ("backup_timer", "the scheduled backup (systemd timer)")
