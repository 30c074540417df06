"""The upgrades item's plan, from parsed facts: the policy APT really uses (apt-config dump) against
the wanted one; and its verify step's shell, run here against a stand-in `apt-config`."""

from __future__ import annotations

import re
import subprocess

import pytest

from opskit.facts import system
from opskit.facts.files import FileState
from opskit.provision import upgrades
from opskit.provision.item import Host
from opskit.steps import Check, Run

from .provision_host import make_host

CONF = upgrades.CONF



@pytest.fixture
def host(env):
    def make(**settings) -> Host:
        return make_host(env, **settings)
    return make


def dump_of(h: Host, **override) -> str:
    """What `apt-config dump --format '%f=%v%n'` (filtered as the fact does) prints when APT uses
    the wanted policy, with `override` (key -> value, or tuple for a list) on top."""
    scalars = {**upgrades.wanted_scalars(h), **{k: v for k, v in override.items() if isinstance(v, str)}}
    lists = {**upgrades.wanted_lists(h), **{k: v for k, v in override.items() if isinstance(v, tuple)}}
    lines = ["APT::Periodic::=", "Unattended-Upgrade::="]
    lines += [f"{k}={v}" for k, v in scalars.items()]
    for key, items in lists.items():
        lines += [f"{key}="] + [f"{key}::={i}" for i in items]
    return "\n".join(lines)


def policy(text: str, program="/usr/bin/unattended-upgrade", timers=None) -> system.UpgradePolicy:
    timers = timers or {"apt-daily.timer": "enabled", "apt-daily-upgrade.timer": "enabled"}
    return system.parse_upgrades("\n=====opskit:apt=====\n" + text + "\n=====opskit:program=====\n"
                                 + (program or "!absent") + "\n=====opskit:timers=====\n"
                                 + "\n".join(f"{k} {v}" for k, v in timers.items()))


def converged(h: Host) -> dict:
    return {CONF: FileState(CONF, upgrades.render(h).encode(), 0o644, "root", "root")}


# -- the rendered file ---------------------------------------------------------------------------------


def test_the_blacklist_holds_exact_names_as_unattended_upgrade_matches_them():
    pattern = upgrades.blacklist_pattern("docker.io")
    assert pattern == r"^(docker\.io)$"
    # unattended-upgrade: re.match(item, name) (is_pkgname_in_blacklist)
    assert re.match(pattern, "docker.io")
    assert not re.match(pattern, "docker.io-doc")
    assert not re.match(pattern, "dockerXio")
    assert re.match(upgrades.blacklist_pattern("g++"), "g++") and not re.match(upgrades.blacklist_pattern("g++"), "ggg")


def test_no_blacklist_item_becomes_an_apt_regex_pin():
    # unattended-upgrade 2.9 `python_regex_is_posix`: items that pass it become apt regex pins
    # (slow on every lookup); the others are pinned by exact name
    posix = re.compile("^[-a-zA-Z0-9\\^\\$\\+\\.:]*$")
    for name in ("docker-cli", "runc", "containerd", "docker.io", "g++"):
        assert not posix.match(upgrades.blacklist_pattern(name)), name


def test_the_file_allows_security_origins_only_and_clears_what_other_files_add(host):
    text = upgrades.render(host())
    assert "#clear Unattended-Upgrade::Origins-Pattern;" in text
    assert "#clear Unattended-Upgrade::Allowed-Origins;" in text
    assert "#clear Unattended-Upgrade::Package-Blacklist;" in text
    origins = re.findall(r'^\t"(origin=[^"]+)";$', text, re.M)
    assert origins and all("Security" in o or "-security" in o for o in origins)
    assert '\t"^(containerd)$";' in text and '\t"^(docker\\.io)$";' in text and '\t"^(runc)$";' in text
    assert 'APT::Periodic::Unattended-Upgrade "1";' in text
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in text


def test_the_file_follows_the_inventory(host):
    text = upgrades.render(host(upgrades=False, reboot=True, reboot_time="03:15", hold=("nginx",)))
    assert 'APT::Periodic::Unattended-Upgrade "0";' in text
    assert 'Unattended-Upgrade::Automatic-Reboot "true";' in text
    assert 'Unattended-Upgrade::Automatic-Reboot-Time "03:15";' in text
    assert re.findall(r'^\t"(\^[^"]+)";$', text, re.M) == ["^(nginx)$"]
    assert upgrades.render(host()) == upgrades.render(host())


def test_ubuntu_gets_ubuntus_security_origins(host):
    text = upgrades.render(host(distribution="ubuntu-24.04"))
    assert '"origin=Ubuntu,archive=${distro_codename}-security";' in text
    assert "Debian" not in text.split("Origins-Pattern {")[1].split("};")[0]


def test_the_package_is_needed_only_when_upgrades_are_on(host):
    assert upgrades.packages(host()) == ("unattended-upgrades",)
    assert upgrades.packages(host(upgrades=False)) == ()


# -- the plan ------------------------------------------------------------------------------------------


def test_a_bare_host_gets_the_file_and_a_proof_and_every_difference_is_named(host):
    h = host()
    p = upgrades.plan(h, {CONF: FileState(CONF, None)}, policy("", program=None))
    assert [type(s) for s in p.steps] == [Run, Check, Run]  # write, prove, install what is pending
    assert p.steps[0].argv[4] == CONF and p.steps[0].stdin == upgrades.render(h).encode()
    assert f"{CONF}: missing" in p.changes
    assert "APT::Periodic::Unattended-Upgrade is unset, wanted '1'" in p.changes
    assert any(c.startswith("Unattended-Upgrade::Package-Blacklist lacks ^(docker\\.io)$") for c in p.changes)


def test_debians_defaults_are_named_as_what_they_add(host):
    h = host()
    debian = dump_of(h, **{"Unattended-Upgrade::Origins-Pattern": (
        "origin=Debian,codename=${distro_codename},label=Debian",
        "origin=Debian,codename=${distro_codename},label=Debian-Security",
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"),
        "Unattended-Upgrade::Package-Blacklist": ()})
    p = upgrades.plan(h, {CONF: FileState(CONF, None)}, policy(debian))
    assert "Unattended-Upgrade::Origins-Pattern also has origin=Debian,codename=${distro_codename},label=Debian" \
        in p.changes


def test_a_converged_host_plans_nothing(host):
    h = host()
    p = upgrades.plan(h, converged(h), policy(dump_of(h)))
    assert p.changes == () and p.steps == ()


def test_a_file_that_overrides_ours_is_a_change_with_a_proof_that_will_name_it(host):
    h = host()
    p = upgrades.plan(h, converged(h), policy(dump_of(h, **{"Unattended-Upgrade::Automatic-Reboot": "true"})))
    assert p.changes == ("Unattended-Upgrade::Automatic-Reboot is 'true', wanted 'false'",)
    assert [type(s) for s in p.steps] == [Check, Run]  # our file is right: nothing to write


def test_a_file_with_other_mode_is_rewritten(host):
    h = host()
    found = {CONF: FileState(CONF, upgrades.render(h).encode(), 0o600, "root", "root")}
    p = upgrades.plan(h, found, policy(dump_of(h)))
    assert p.changes == (f"{CONF}: mode 0600, wanted 0644",)
    assert p.steps[0].title == f"write {CONF}"


def test_upgrades_off_is_the_periodic_switch_at_zero(host):
    h = host(upgrades=False)
    p = upgrades.plan(h, converged(host()), policy(dump_of(host())))
    assert "APT::Periodic::Unattended-Upgrade is '1', wanted '0'" in p.changes


def test_disabled_timers_are_enabled_when_upgrades_are_on(host):
    h = host()
    off = {"apt-daily.timer": "enabled", "apt-daily-upgrade.timer": "masked"}
    p = upgrades.plan(h, converged(h), policy(dump_of(h), timers=off))
    assert p.changes == ("apt-daily-upgrade.timer is masked, wanted enabled",)
    assert p.steps[0].argv[-1] == "apt-daily-upgrade.timer" and "enable --now" in p.steps[0].argv[2]
    assert upgrades.plan(host(upgrades=False), converged(host(upgrades=False)),
                         policy(dump_of(host(upgrades=False)), timers=off)).steps == ()


# -- the facts -----------------------------------------------------------------------------------------


def test_the_policy_reads_lists_scalars_and_the_blacklist_as_unattended_upgrade_does(host):
    p = policy(dump_of(host()))
    assert p.is_enabled
    assert p.is_held("docker.io") and p.is_held("containerd") and not p.is_held("docker.io-doc")
    assert not p.is_held("openssl")
    assert p.program == "/usr/bin/unattended-upgrade"
    assert policy("APT::Periodic::Unattended-Upgrade=0").is_enabled is False
    assert policy("", program=None).program is None


def test_pending_upgrades_are_read_from_a_simulated_upgrade_and_the_held_ones_left_out(host):
    text = "\n".join([
        "Inst libssl3 [3.0.20-1~deb12u2] (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])",
        "Inst tzdata [2026b-0+deb12u1] (2026f-0+deb12u1 Debian:12.13/oldstable, "
        "Debian-Security:12/oldstable-security [all])",
        "Inst base-files [12.4+deb12u12] (12.4+deb12u13 Debian:12.13/oldstable [amd64])",
        "Inst containerd [1.6.20~ds1-1] (1.6.20~ds1-1+deb12u1 Debian-Security:12/oldstable-security [amd64])",
        "Conf libssl3 (3.0.22-1~deb12u2 Debian-Security:12/oldstable-security [amd64])",
    ])
    pending = system.parse_pending(text)
    assert [p.name for p in pending] == ["libssl3", "tzdata", "base-files", "containerd"]
    assert pending[1].origins == ("Debian:12.13/oldstable", "Debian-Security:12/oldstable-security")
    assert pending[0].current == "3.0.20-1~deb12u2" and pending[0].candidate == "3.0.22-1~deb12u2"
    assert [p.name for p in system.security_pending(pending, policy(dump_of(host())))] == ["libssl3", "tzdata"]


# -- the verify step's shell, against a stand-in apt-config ---------------------------------------------


def run_check(check: Check, dump: str, tmp_path) -> subprocess.CompletedProcess:
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (tmp_path / "dump").write_text(dump + "\n")
    (fake / "apt-config").write_text(f"#!/bin/sh\ncat {tmp_path / 'dump'}\n")
    (fake / "apt-config").chmod(0o755)
    return subprocess.run(list(check.argv), capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{fake}:/usr/bin:/bin"})


def test_the_proof_passes_on_the_wanted_policy_whatever_the_order(host, tmp_path):
    h = host()
    lines = dump_of(h).splitlines()
    done = run_check(upgrades.verify(h), "\n".join(["Other::Key=1", *reversed(lines)]), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_proof_fails_naming_what_differs(host, tmp_path):
    h = host()
    dump = dump_of(h, **{"Unattended-Upgrade::Automatic-Reboot": "true"}) + \
        "\nUnattended-Upgrade::Package-Blacklist::=^foo$"
    done = run_check(upgrades.verify(h), dump, tmp_path)
    assert done.returncode == 1
    assert "in force but not wanted: Unattended-Upgrade::Automatic-Reboot=true" in done.stdout
    assert "wanted but not in force: Unattended-Upgrade::Automatic-Reboot=false" in done.stdout
    assert "in force but not wanted: Unattended-Upgrade::Package-Blacklist::=^foo$" in done.stdout


def test_the_proof_keeps_the_backslashes_of_the_blacklist(host, tmp_path):
    h = host()
    # a blacklist item that lost its backslash (^(docker.io)$) is another regex: it must not pass
    dump = dump_of(h).replace(r"^(docker\.io)$", "^(docker.io)$")
    done = run_check(upgrades.verify(h), dump, tmp_path)
    assert done.returncode == 1 and r"wanted but not in force: Unattended-Upgrade::Package-Blacklist::=^(docker\.io)$" \
        in done.stdout


def test_a_host_that_gets_its_policy_installs_the_pending_security_updates_at_once(host):
    h = host()
    p = upgrades.plan(h, {CONF: FileState(CONF, None)}, policy(""))
    assert p.steps[-1].argv == ("unattended-upgrade",) and p.steps[-2].title.startswith("upgrades: prove")
    # converged: the daily run does the rest; upgrades off: nothing is installed by opskit either
    assert not any(s.argv == ("unattended-upgrade",) for s in upgrades.plan(h, converged(h), policy(dump_of(h))).steps)
    off = host(upgrades=False)
    assert not any(s.argv == ("unattended-upgrade",)
                   for s in upgrades.plan(off, {CONF: FileState(CONF, None)}, policy("")).steps)
