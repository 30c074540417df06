"""What the provisioning run decides before it touches a server: keys, distribution, the report."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys

import pytest

from opskit.errors import NotConverged, ProvisionRefused, StepFailed
from opskit.provision import distros, guard, item, run
from opskit.provision.item import PROVISIONED, ItemPlan, Wanted
from opskit.provision.run import ITEMS, Report, describe, read_keys
from opskit.runner import Runner
from opskit.ssh import Completed
from opskit.steps import LOCAL, SERVER, Run

from .fakes import fake_programs
from .provision_host import KEY, make_host


def settings(env, *paths):
    return dataclasses.replace(env.provision, authorized_keys=tuple(paths))


def test_the_deploy_keys_come_from_the_public_key_files_without_comments(env, tmp_path):
    pub = tmp_path / "id.pub"
    pub.write_text(f"# the CI key\n{KEY}\n\n{KEY}\n")
    assert read_keys(settings(env, pub)) == (" ".join(KEY.split()[:2]),)


def test_a_missing_pub_file_is_derived_from_its_private_key(env, tmp_path):
    import subprocess
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "comment", "-f", str(tmp_path / "id")],
                   check=True)
    from_pub = read_keys(settings(env, tmp_path / "id.pub"))
    (tmp_path / "id.pub").unlink()
    assert read_keys(settings(env, tmp_path / "id.pub")) == from_pub and from_pub[0].startswith("ssh-ed25519 ")


@pytest.mark.parametrize("content, message", [
    (None, "No such file"),
    ("private", "not a public key line"),
    ("", "no key in them"),
])
def test_a_deploy_user_without_a_usable_key_is_refused_before_any_login(env, tmp_path, content, message):
    pub = tmp_path / "id.pub"
    if content == "private":  # a private key named where a public one belongs, made here (none in git)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "made")], check=True)
        pub.write_bytes((tmp_path / "made").read_bytes())
    elif content is not None:
        pub.write_text(content)
    with pytest.raises(ProvisionRefused, match=message) as refused:
        read_keys(settings(env, pub))
    assert "provision.authorized_keys" in str(refused.value)


def test_the_default_key_is_the_ssh_key_files_public_half(env):
    assert env.provision.authorized_keys == (env.ssh.key_file.with_name(env.ssh.key_file.name + ".pub"),)


def test_another_distribution_than_the_inventory_says_is_refused():
    with pytest.raises(ProvisionRefused, match="runs Debian GNU/Linux 13.*provision.distribution is debian-12"):
        distros.distro("debian-12", {"ID": "debian", "VERSION_ID": "13", "PRETTY_NAME": "Debian GNU/Linux 13"})
    assert distros.distro("debian-12", {"ID": "debian", "VERSION_ID": "12"}).codename == "bookworm"


def test_items_run_in_the_order_that_keeps_the_operator_in():
    names = [item.NAME for item in ITEMS]
    # Docker reads daemon.json at its first start; the user needs the docker group; sshd refuses
    # root, so it comes last, after the deploy user can log in
    assert names.index("dockerd") < names.index("packages") < names.index("accounts") < names.index("sshd")
    # (only the backup timer, which touches no login, comes after it)
    assert names[names.index("sshd") + 1:] == ["backup_timer"] and names.index("firewall") > names.index("accounts")


def test_the_report_names_every_item_and_each_difference():
    step = Run("x", ["true"], on="server")
    plans = [ItemPlan(item.NAME) for item in ITEMS]
    plans[2] = ItemPlan("packages", ["not installed: sudo"], [step])
    text = describe(plans)
    assert "  packages: 1 to change\n    - not installed: sudo" in text
    assert text.count(": no change") == len(ITEMS) - 1
    assert str(Report("root", tuple(plans), 1.0, True)).startswith("provision: 1 of 8 items would change")
    assert str(Report("deploy (sudo)", tuple(ItemPlan(i.NAME) for i in ITEMS), 0.4, False)) == \
        "provision: no change in any of 8 items (0.4s, as deploy (sudo))"


def test_an_item_plan_without_steps_cannot_claim_changes():
    with pytest.raises(ValueError, match="changes and steps go together"):
        ItemPlan("x", ["something differs"], [])


def test_a_wanted_file_names_each_difference():
    w = Wanted("/etc/x", b"new\n", 0o600, "root", "root")
    from opskit.facts.files import FileState
    assert w.differences(None) == ["/etc/x: missing"]
    assert w.differences(FileState("/etc/x", b"old\n", 0o644, "deploy", "root")) == [
        "/etc/x: content differs", "/etc/x: mode 0644, wanted 0600", "/etc/x: owner deploy:root, wanted root:root"]
    assert w.differences(FileState("/etc/x", b"new\n", 0o600, "root", "root")) == []


def test_the_guard_arms_before_the_change_and_disarms_only_after_a_new_login(env):
    change = Run("change", ["true"], on="server")
    steps = guard.guarded("sshd", ["/etc/ssh/sshd_config.d/00-opskit.conf"], "systemctl reload ssh", [change], env)
    assert guard.is_arm(steps[0]) and steps[1] is change
    assert steps[2].on == "local" and steps[2].argv[1:3] == ("-m", "opskit.provision.prove")
    assert steps[2].argv[-3:] == (env.ssh.user, str(env.ssh.key_file), str(env.ssh.known_hosts))
    assert steps[3].title.startswith("sshd: proven")


# -- the guard's shell, run here: the state folder moved under tmp_path, systemctl and systemd-run
# -- stand-ins that write down what they were asked ---------------------------------------------------


@pytest.fixture
def server_tools(tmp_path):
    """(environ, log of systemctl and the `then` command, file where systemd-run writes its argv)."""
    log, timer = tmp_path / "log", tmp_path / "timer"
    path = fake_programs(tmp_path / "bin", systemctl=f'#!/bin/sh\necho "systemctl $*" >> {log}\n',
                         systemd_run=f'#!/bin/sh\nprintf "%s\\n" "$@" > {timer}\n')
    return {**os.environ, "PATH": path}, log, timer


def _on_server(step, state, environ):
    argv = list(step.argv)
    argv[2] = argv[2].replace(item.STATE_DIR, str(state))
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def armed(tmp_path, server_tools):
    """A file that exists and one that does not, kept by `arm`, then changed (the item's change)."""
    environ, log, _ = server_tools
    state, kept, absent = tmp_path / "state", tmp_path / "etc" / "kept.conf", tmp_path / "etc" / "new.conf"
    kept.parent.mkdir()
    kept.write_text("old\n")
    kept.chmod(0o640)
    _on_server(guard.arm("sshd", [str(kept), str(absent)], f"echo reloaded >> {log}"), state, environ)
    kept.write_text("new\n")
    absent.write_text("new\n")
    return state, kept, absent


def test_arm_sets_a_timer_that_puts_the_files_back_on_its_own(server_tools, armed):
    environ, log, timer = server_tools
    state, kept, absent = armed
    argv = timer.read_text().splitlines()  # no file: systemd-run was never asked
    assert argv[argv.index("--unit") + 1] == "opskit-revert-sshd"
    assert f"--on-active={guard.REVERT_AFTER_S}s" in argv
    command = argv[argv.index("--timer-property=AccuracySec=1s") + 1:]
    assert command == ["/bin/sh", str(state / "revert" / "sshd" / "restore")]
    subprocess.run(command, env=environ, check=True, timeout=30)  # the timer fires
    assert kept.read_text() == "old\n" and kept.stat().st_mode & 0o777 == 0o640 and not absent.exists()
    assert "reloaded" in log.read_text()


def test_disarm_stops_the_timer_and_keeps_the_change(server_tools, armed):
    environ, log, _ = server_tools
    state, kept, absent = armed
    _on_server(guard.disarm("sshd"), state, environ)
    assert "systemctl stop opskit-revert-sshd.timer" in log.read_text()
    assert not (state / "revert" / "sshd").exists() and kept.read_text() == absent.read_text() == "new\n"


def test_revert_now_puts_the_files_back_and_stops_the_timer(server_tools, armed):
    environ, log, _ = server_tools
    state, kept, absent = armed
    _on_server(guard.revert_now("sshd"), state, environ)
    assert kept.read_text() == "old\n" and not absent.exists() and not (state / "revert" / "sshd").exists()
    assert "systemctl stop opskit-revert-sshd.timer" in log.read_text() and "reloaded" in log.read_text()


# -- the run: a stand-in server, the items' plans given -----------------------------------------------


class FakeServer:
    """Stands in for the SSH connection: writes down each command; `fails(argv)` picks the failures."""

    def __init__(self, fails=lambda argv: False):
        self.commands, self.fails = [], fails

    def run(self, argv, stdin=None, timeout=None, on_line=None) -> Completed:
        self.commands.append(tuple(argv))
        return Completed(1 if self.fails(tuple(argv)) else 0, b"", b"")

    def close(self):
        pass

    def marked(self) -> bool:
        return any(PROVISIONED in argv for argv in self.commands if argv[:2] == ("sh", "-c"))


CHANGE = Run("change it", ["change-it"], on=SERVER)


@pytest.fixture
def provisioning(env, monkeypatch):
    """(server, looks): `provision(env)` runs against the server, and each look at it (the plans
    before the run, then after it) finds the next list of `looks`."""
    server, looks = FakeServer(), []
    monkeypatch.setattr(run, "read_keys", lambda settings: (KEY,))
    monkeypatch.setattr(run, "connect", lambda env_: (server, "deploy (sudo)"))
    monkeypatch.setattr(run, "host_of", lambda conn, env_, keys: make_host(env_))
    monkeypatch.setattr(run, "plan_all", lambda conn, host: looks.pop(0))
    return server, looks


def test_a_run_whose_changes_did_not_take_fails_and_leaves_the_host_unmarked(env, provisioning):
    server, looks = provisioning
    looks += [[ItemPlan("sshd", ["X11Forwarding yes, wanted no"], [CHANGE])]] * 2
    with pytest.raises(NotConverged, match="X11Forwarding yes, wanted no"):
        run.provision(env, out=io.StringIO())
    assert ("change-it",) in server.commands and looks == [] and not server.marked()


def test_a_run_that_converged_marks_the_host(env, provisioning):
    server, looks = provisioning
    looks += [[ItemPlan("sshd", ["X11Forwarding yes, wanted no"], [CHANGE])], [ItemPlan("sshd")]]
    report = run.provision(env, out=io.StringIO())
    assert report.changed and looks == [] and server.marked()


def _guarded_plan() -> ItemPlan:
    """arm, change, prove (a local stand-in that fails: no login is tried), disarm, in guard.guarded's order."""
    prove = Run("prove", [sys.executable, "-c", "raise SystemExit(1)"], on=LOCAL)
    return ItemPlan("sshd", ["x"], [guard.arm("sshd", ["/etc/x"], "true"), CHANGE, prove, guard.disarm("sshd")],
                    guarded=True)


def test_a_failed_proof_is_reverted_at_once_over_the_link_still_open():
    server = FakeServer()
    with pytest.raises(StepFailed) as failed:
        run._run_item(Runner(server, out=io.StringIO()), _guarded_plan())
    assert failed.value.step.title == "prove"
    assert server.commands[-1] == guard.revert_now("sshd").argv and guard.disarm("sshd").argv not in server.commands


def test_nothing_is_reverted_that_was_not_armed():
    arm = guard.arm("sshd", ["/etc/x"], "true").argv
    server = FakeServer(fails=lambda argv: argv == arm)
    with pytest.raises(StepFailed):
        run._run_item(Runner(server, out=io.StringIO()), _guarded_plan())
    assert server.commands == [arm]
    unguarded = FakeServer(fails=lambda argv: argv == ("change-it",))
    with pytest.raises(StepFailed):
        run._run_item(Runner(unguarded, out=io.StringIO()), ItemPlan("upgrades", ["x"], [CHANGE]))
    assert unguarded.commands == [("change-it",)]


def test_when_the_revert_fails_too_the_first_failure_is_raised_and_the_timer_named():
    revert = guard.revert_now("sshd").argv
    server, out = FakeServer(fails=lambda argv: argv == revert), io.StringIO()
    with pytest.raises(StepFailed) as failed:
        run._run_item(Runner(server, out=out), _guarded_plan())
    assert failed.value.step.title == "prove" and server.commands[-1] == revert
    assert f"the server does so by itself within {guard.REVERT_AFTER_S}s" in out.getvalue()
