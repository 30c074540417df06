"""What the provisioning run decides before it touches a server: keys, distribution, the report."""

from __future__ import annotations

import dataclasses

import pytest

from opskit.errors import ProvisionRefused
from opskit.provision import distros, guard
from opskit.provision.item import ItemPlan, Wanted
from opskit.provision.run import ITEMS, Report, describe, read_keys
from opskit.steps import Run

from .provision_host import KEY


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
    ("-----BEGIN OPENSSH PRIVATE KEY-----\n", "not a public key line"),
    ("", "no key in them"),
])
def test_a_deploy_user_without_a_usable_key_is_refused_before_any_login(env, tmp_path, content, message):
    pub = tmp_path / "id.pub"
    if content is not None:
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
    assert names[-1] == "sshd" and names.index("firewall") > names.index("accounts")


def test_the_report_names_every_item_and_each_difference():
    step = Run("x", ["true"], on="server")
    plans = [ItemPlan(item.NAME) for item in ITEMS]
    plans[2] = ItemPlan("packages", ["not installed: sudo"], [step])
    text = describe(plans)
    assert "  packages: 1 to change\n    - not installed: sudo" in text
    assert text.count(": no change") == len(ITEMS) - 1
    assert str(Report("root", tuple(plans), 1.0, True)).startswith("provision: 1 of 7 items would change")
    assert str(Report("deploy (sudo)", tuple(ItemPlan(i.NAME) for i in ITEMS), 0.4, False)) == \
        "provision: no change in any of 7 items (0.4s, as deploy (sudo))"


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
