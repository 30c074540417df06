"""The inventory's `provision:` section: safe defaults, and every bad value named with its key."""

from __future__ import annotations

import pytest

from opskit.errors import InventoryError
from opskit.inventory.provisioning import DOCKER_PACKAGES, Opening


def problems_of(make_env, name, edit):
    with pytest.raises(InventoryError) as info:
        make_env(name, edit)
    return info.value.problems


def provision(raw, env="production"):
    return raw["environments"][env].setdefault("provision", {})


def test_defaults_are_the_safe_ones(make_env):
    p = make_env("production").provision
    assert (p.bootstrap_user, p.distribution, p.docker_from) == ("root", "debian-12", "distribution")
    assert p.allow == (Opening(80, "tcp"), Opening(443, "tcp"), Opening(443, "udp"))
    assert (p.ssh_max_auth_tries, p.ssh_new_per_minute) == (3, 30)
    assert p.upgrades and not p.reboot and p.hold == DOCKER_PACKAGES
    assert {"docker.io", "containerd", "containerd.io", "runc", "docker-ce"} <= set(p.hold)
    assert (p.swap_mb, p.swappiness, p.journal_max_use) == (2048, 10, "500M")
    assert p.live_restore and not p.userland_proxy and p.no_new_privileges


def test_values_are_read(make_env):
    def edit(raw):
        provision(raw).update(swap="512m", firewall={"allow": ["443/tcp"]}, upgrades={"reboot": True,
                                                                                     "reboot_time": "03:15"},
                              ssh={"max_auth_tries": 2}, docker={"live_restore": False})
    p = make_env("production", edit).provision
    assert (p.swap_mb, p.allow, p.reboot, p.reboot_time) == (512, (Opening(443, "tcp"),), True, "03:15")
    assert (p.ssh_max_auth_tries, p.live_restore) == (2, False)
    assert make_env("production", lambda raw: provision(raw).update(swap=0)).provision.swap_mb == 0


@pytest.mark.parametrize("key, value, message", [
    ("swap", "2 GB", "'2 GB' is not a size (expected e.g. 2g or 512m, or 0 for none)"),
    ("distribution", "centos-7", "'centos-7' is not one of: debian-12, ubuntu-24.04"),
    ("docker_from", "snap", "'snap' is not one of: distribution, docker"),
    ("swappiness", 101, "expected a whole number from 0 to 100, got 101"),
    ("journal_max_use", "lots", "'lots' is not a journal size (expected e.g. 500M or 2G)"),
    ("bootstrap_user", "Root Admin", "is not a user name"),
    ("authorized_keys", "~/.ssh/id.pub", "expected a list of public key files"),
])
def test_a_bad_value_is_named_with_its_key(make_env, key, value, message):
    problems = problems_of(make_env, "production", lambda raw: provision(raw).update({key: value}))
    assert len(problems) == 1 and problems[0].startswith(f"environments.production.provision.{key}: ")
    assert message in problems[0]


@pytest.mark.parametrize("section, key, value, message", [
    ("firewall", "allow", ["80"], "'80' is not a port and protocol (expected e.g. 443/tcp or 443/udp)"),
    ("firewall", "allow", ["70000/tcp"], "is not a port and protocol"),
    ("ssh", "max_auth_tries", 0, "expected a whole number from 1 to 6, got 0"),
    ("ssh", "new_connections_per_minute", True, "expected a whole number from 1 to 600"),
    ("upgrades", "reboot_time", "4am", "'4am' is not a time of day (expected HH:MM, e.g. 04:30)"),
    ("upgrades", "hold", ["docker*"], "'docker*' is not a Debian package name"),
    ("upgrades", "reboot", "yes", "expected true or false"),
])
def test_a_bad_nested_value_is_named_with_its_key(make_env, section, key, value, message):
    problems = problems_of(make_env, "production", lambda raw: provision(raw).update({section: {key: value}}))
    assert len(problems) == 1 and problems[0].startswith(f"environments.production.provision.{section}.{key}: ")
    assert message in problems[0]


def test_unknown_keys_are_named(make_env):
    problems = problems_of(make_env, "production", lambda raw: provision(raw).update(swapsize="2g",
                                                                                   ssh={"port": 22}))
    assert problems[0].startswith("environments.production.provision.swapsize: unknown key")
    assert problems[1].startswith("environments.production.provision.ssh.port: unknown key (expected one of: "
                                  "max_auth_tries, new_connections_per_minute)")
