"""The accounts item: the deploy user, its keys, sudo and the release folder (no server)."""

from __future__ import annotations

import pytest

from opskit.facts.accounts import Account, parse_account
from opskit.facts.files import FileState
from opskit.provision import accounts

from .provision_host import KEY, make_host


@pytest.fixture
def host(env):
    return make_host(env)


def done_files(host):
    return {w.path: FileState(w.path, w.content, w.mode, w.owner, w.group) for w in accounts._wanted(host)}


DONE = Account(True, "/home/deploy", "/bin/bash", ("deploy", "docker"), ("deploy", "deploy", 0o750))


def test_a_bare_host_gets_the_user_its_group_keys_sudo_and_folder(host):
    plan = accounts.plan(host, Account(False, None, None, (), None), {})
    argvs = [s.argv for s in plan.steps]
    assert argvs[0] == ("useradd", "--create-home", "--user-group", "--shell", "/bin/bash", "deploy")
    assert ("usermod", "--append", "--groups", "docker", "deploy") in argvs
    assert argvs[-1] == ("install", "-d", "-m", "0750", "-o", "deploy", "-g", "deploy", "/srv/jobagent")
    keys = next(s for s in plan.steps if "/home/deploy/.ssh/authorized_keys" in s.argv)
    assert keys.stdin == f"{KEY}\n".encode() and "0600" in keys.argv and keys.argv[-2:] == ("deploy", "deploy")
    sudo = next(s for s in plan.steps if accounts.SUDOERS in s.argv)
    assert sudo.stdin == b"deploy ALL=(ALL:ALL) NOPASSWD: ALL\n" and "0440" in sudo.argv
    assert "visudo -cf %s" in sudo.argv  # a broken sudoers never replaces a good one


def test_a_provisioned_host_plans_nothing(host):
    plan = accounts.plan(host, DONE, done_files(host))
    assert plan.changes == () and plan.steps == ()


def test_a_key_added_by_hand_is_removed_the_inventory_keys_are_all_that_log_in(host):
    files = done_files(host)
    path = "/home/deploy/.ssh/authorized_keys"
    files[path] = FileState(path, f"{KEY}\nssh-ed25519 AAAAsomeoneelse x\n".encode(), 0o600, "deploy", "deploy")
    plan = accounts.plan(host, DONE, files)
    assert plan.changes == (f"{path}: content differs",)
    assert [s.argv[0] for s in plan.steps] == ["install", "sh"]


def test_a_folder_with_another_owner_or_mode_is_named_and_fixed(host):
    plan = accounts.plan(host, Account(True, "/home/deploy", "/bin/bash", ("deploy", "docker"),
                                       ("root", "root", 0o755)), done_files(host))
    assert plan.changes == ("/srv/jobagent: owned by root:root 0755, wanted owned by deploy:deploy 0750",)


def test_a_user_outside_the_docker_group_is_added(host):
    plan = accounts.plan(host, Account(True, "/home/deploy", "/bin/bash", ("deploy",), ("deploy", "deploy", 0o750)),
                         done_files(host))
    assert plan.changes == ("deploy is not in the docker group",)


def test_the_fact_reads_passwd_groups_and_the_folder():
    text = ("\n=====opskit:passwd=====\ndeploy:x:1000:1000::/home/deploy:/bin/bash\n=====opskit:groups=====\n"
            "deploy docker\n=====opskit:remote_dir=====\ndeploy deploy 750\n")
    assert parse_account(text) == DONE
    missing = parse_account("\n=====opskit:passwd=====\n\n=====opskit:groups=====\n\n=====opskit:remote_dir=====\nmissing\n")
    assert missing == Account(False, None, None, (), None)
