"""The scheduled backup: the plan rendered as a script a timer runs alone, word for word, with the
run's own stamp and release put in; and the systemd units that run it."""

from __future__ import annotations

import subprocess

import pytest

from opskit.backup import plan as plans
from opskit.backup import restic, schedule
from opskit.secrets import Secret
from opskit.steps import LOCAL, SERVER, Plan, Run, WriteFile

WORDS = ["plain", "two words", "it's", 'say "hi"', "$HOME", "`id`", "back\\slash", "semi;colon", "", "*",
         "line\nbreak", "-n", "ünïcode"]


def run_script(text: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "backup.sh"
    path.write_text(text)
    return subprocess.run(["sh", str(path)], check=False, capture_output=True, text=True, timeout=30, cwd=tmp_path)


def test_every_word_of_every_step_reaches_its_program_unchanged(tmp_path):
    plan = Plan("p", [Run("print words", ["printf", "[%s]\\n", *WORDS], on=SERVER)])
    done = run_script(schedule.script(plan, str(tmp_path)), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("==> [1/1] print words\n", 1)[1].rsplit("backup ", 1)[0] == \
        "".join(f"[{w}]\n" for w in WORDS)


def test_the_stamp_and_release_are_the_runs_own(tmp_path):
    (tmp_path / "releases" / "rel-9").mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/rel-9")
    plan = Plan("p", [Run("show", ["printf", "%s|%s\\n", f"/b/{schedule.STAMP_NOW}/$x", schedule.RELEASE_NOW],
                          on=SERVER)])
    done = run_script(schedule.script(plan, str(tmp_path)), tmp_path)
    shown = done.stdout.splitlines()[2]
    stamp, release = shown.split("|")
    assert release == "rel-9" and stamp.startswith("/b/") and stamp.endswith("/$x")
    assert plans.STAMP.match(stamp.split("/")[2])


def test_without_a_current_release_the_release_is_none(tmp_path):
    plan = Plan("p", [Run("show", ["echo", schedule.RELEASE_NOW], on=SERVER)])
    assert run_script(schedule.script(plan, str(tmp_path)), tmp_path).stdout.splitlines()[2] == "none"


def test_the_script_stops_at_the_first_failing_step(tmp_path):
    plan = Plan("p", [Run("ok", ["true"], on=SERVER), Run("fails", ["sh", "-c", "exit 3"], on=SERVER),
                      Run("never", ["touch", str(tmp_path / "ran")], on=SERVER)])
    done = run_script(schedule.script(plan, str(tmp_path)), tmp_path)
    assert done.returncode == 3 and not (tmp_path / "ran").exists() and "==> [3/3]" not in done.stdout


def test_a_steps_input_arrives_as_a_here_document(tmp_path):
    sql = b"SELECT 'a$b `c`';\n\\set x 1\n"
    plan = Plan("p", [Run("cat", ["cat"], on=SERVER, stdin=sql)])
    assert run_script(schedule.script(plan, str(tmp_path)), tmp_path).stdout.splitlines()[2:4] == \
        ["SELECT 'a$b `c`';", "\\set x 1"]


@pytest.mark.parametrize("step", [
    Run("secret argv", ["echo", Secret("pw")], on=SERVER),
    Run("secret stdin", ["cat"], on=SERVER, stdin=Secret("pw")),
    Run("local", ["true"], on=LOCAL),
    WriteFile("file", "/x", b"y"),
])
def test_a_step_the_timer_cannot_run_without_a_secret_is_refused(step):
    with pytest.raises(schedule.ScheduleError):
        schedule.script(Plan("p", [step]), "/srv/app")


def test_the_whole_backup_plan_renders_and_holds_no_secret():
    access = restic.Access(restic.repository("sftp:u1@box.example:/restic"), "jobagent", "/srv/app/secrets/pw",
                           "/srv/app/secrets/key", "/srv/app/secrets/kh")
    s = plans.Settings("/srv/app/backups", access, "postgres", "job_agent", plans.psql_prefix("/srv/app"))
    text = schedule.script(plans.backup_plan(s, schedule.STAMP_NOW, schedule.RELEASE_NOW), "/srv/app")
    assert schedule.STAMP_NOW not in text and schedule.RELEASE_NOW not in text
    assert "RESTIC_PASSWORD_FILE=/run/secrets/restic-password" in text
    assert "type=bind,source=/srv/app/backups/${stamp},target=/backup,readonly" in text
    assert subprocess.run(["sh", "-n"], input=text, text=True, check=False).returncode == 0  # valid sh


def test_the_timer_runs_missed_backups_and_the_service_runs_once_as_the_deploy_user():
    u = schedule.units("/srv/app/backups/bin/backup.sh", "deploy", "*-*-* 03:15:00", "opskit backup of jobagent")
    assert set(u) == {"opskit-backup.service", "opskit-backup.timer"}
    service, timer = u["opskit-backup.service"], u["opskit-backup.timer"]
    assert "Type=oneshot\n" in service and "User=deploy\n" in service
    assert "ExecStart=/bin/sh /srv/app/backups/bin/backup.sh\n" in service and "Requires=docker.service" in service
    assert "OnCalendar=*-*-* 03:15:00\n" in timer and "Persistent=true\n" in timer
    assert "WantedBy=timers.target" in timer


@pytest.mark.parametrize("calendar", ["daily\nExecStart=/bin/evil", "", "03:15; rm"])
def test_a_schedule_that_is_not_a_calendar_event_is_refused_by_key(calendar):
    with pytest.raises(schedule.ScheduleError, match="backup.schedule"):
        schedule.units("/srv/app/b.sh", "deploy", calendar, "d")
