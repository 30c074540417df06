"""The server itself: sshd, what listens publicly, Docker and Compose, disk, inodes, clock."""

from __future__ import annotations

import re

import pytest

from .checks import listing, problem

pytestmark = pytest.mark.host

PASSWORD_METHODS = ("password", "keyboard-interactive")
ROOT_WITHOUT_PASSWORD = ("no", "prohibit-password", "without-password", "forced-commands-only")
SSHD_HINT = "grep -riE 'PasswordAuthentication|KbdInteractive|PermitRootLogin' /etc/ssh/sshd_config /etc/ssh/sshd_config.d/"


def _offered(sshd_auth, user):
    methods = sshd_auth[user]
    if isinstance(methods, Exception):
        pytest.fail(problem(f"could not ask sshd which login methods it offers {user}: {methods}"))
    return methods


def test_sshd_offers_no_password_login(sshd_auth, env):
    methods = _offered(sshd_auth, env.ssh.user)
    offered = [m for m in PASSWORD_METHODS if m in methods]
    assert not offered, problem(
        f"sshd on {env.ssh.host}:{env.ssh.port} offers {env.ssh.user} a password login "
        f"({', '.join(offered)}; offered: {', '.join(methods)}): set PasswordAuthentication no and "
        "KbdInteractiveAuthentication no", SSHD_HINT)


def test_sshd_offers_root_no_password_login(sshd_auth, env):
    methods = _offered(sshd_auth, "root")
    offered = [m for m in PASSWORD_METHODS if m in methods]
    assert not offered, problem(
        f"sshd on {env.ssh.host}:{env.ssh.port} offers root a password login ({', '.join(offered)})", SSHD_HINT)


def test_sshd_config_disables_passwords(host_facts):
    sshd = host_facts.sshd
    bad = [f"{k} {sshd.get(k)}" for k in ("passwordauthentication", "kbdinteractiveauthentication",
                                          "permitemptypasswords") if sshd.get(k) != "no"]
    bad += [f"{k} {v} inside `{m}`" for m, k, v in sshd.match_overrides
            if k in ("passwordauthentication", "kbdinteractiveauthentication", "permitemptypasswords") and v != "no"]
    assert not bad, problem(f"sshd_config allows passwords: {'; '.join(bad)} (effective values, defaults included)",
                            SSHD_HINT)


def test_sshd_config_refuses_root_password_login(host_facts):
    sshd = host_facts.sshd
    value = sshd.get("permitrootlogin")
    bad = [] if value in ROOT_WITHOUT_PASSWORD else [f"PermitRootLogin {value}"]
    bad += [f"PermitRootLogin {v} inside `{m}`" for m, k, v in sshd.match_overrides
            if k == "permitrootlogin" and v not in ROOT_WITHOUT_PASSWORD]
    assert not bad, problem(f"sshd_config lets root log in with a password: {'; '.join(bad)} "
                            "(use PermitRootLogin no or prohibit-password)", SSHD_HINT)


def test_only_ssh_http_https_listen_publicly(host_facts):
    allowed = {80, 443} | {int(p) for p in host_facts.sshd.ports if p.isdigit()}
    public = [listener for listener in host_facts.listeners if listener.is_public]
    extra = [str(listener) for listener in public if listener.port not in allowed]
    assert not extra, problem(
        f"listening on public addresses besides ssh ({listing(sorted(allowed - {80, 443}))}), 80 and 443: "
        f"{listing(extra)}", "ss -tlnp  (as root; or: docker ps --format '{{.Names}} {{.Ports}}')")


def test_docker_engine_running(host_facts, env):
    version = host_facts.docker_version
    assert re.match(r"^\d+\.\d+", version), problem(
        f"no Docker engine answers {env.ssh.user}: {version[-200:] or 'no output'}",
        "systemctl status docker; id  (the deploy user must be in the docker group)")


def test_docker_compose_v2_present(host_facts):
    version = host_facts.compose_version.lstrip("v")
    m = re.match(r"^(\d+)\.(\d+)", version)
    assert m and int(m.group(1)) >= 2, problem(
        f"`docker compose` v2 is missing or too old: {version[-200:] or 'no output'}", "docker compose version")


WHERE = {"remote_dir": "the release folder's filesystem", "root": "/", "docker_root": "Docker's data root"}


@pytest.mark.parametrize("where", list(WHERE))
def test_free_disk_space_above_threshold(host_facts, env, where):
    space = host_facts.disk.get(where)
    assert space is not None, problem(f"could not measure free space of {WHERE[where]}", "df -h")
    free_mb = space.available // 1024
    need = env.smoke.min_free_disk_mb
    assert free_mb >= need, problem(
        f"only {free_mb} MB free on {space.path} ({WHERE[where]}); the inventory's smoke.min_free_disk_mb is {need}",
        "df -h; docker system df  (free space: docker image prune)")


@pytest.mark.parametrize("where", list(WHERE))
def test_free_inodes_above_threshold(host_facts, env, where):
    space = host_facts.inodes.get(where)
    assert space is not None, problem(f"could not measure free inodes of {WHERE[where]}", "df -i")
    if space.free_percent is None:
        pytest.skip(f"{space.path}: the filesystem reports no inode count (it allocates them dynamically)")
    need = env.smoke.min_free_inodes_percent
    assert space.free_percent >= need, problem(
        f"only {space.free_percent:.1f}% of inodes free on {space.path} ({WHERE[where]}); "
        f"the inventory's smoke.min_free_inodes_percent is {need}", "df -i")


def test_clock_agrees_with_this_machine(clock, env):

    skew = clock.server - clock.local
    limit = env.smoke.max_clock_skew.seconds + clock.uncertainty
    assert abs(skew) <= limit, problem(
        f"the server's clock is {skew:+.1f}s off this machine's (allowed: {limit:.1f}s)",
        "timedatectl; chronyc tracking")


def test_clock_synchronised(host_facts, env):
    sync = host_facts.time_sync
    if sync.virtualization not in ("none", ""):
        # a container runs on its host's kernel clock, and time services refuse to start there
        # (ConditionVirtualization=!container); what provisioning can do is have one enabled for
        # the day the same setup runs on a VM. test_clock_agrees_with_this_machine checks the clock.
        assert sync.timesyncd == "enabled" or "normal" in sync.chrony.lower(), problem(
            f"no time service is enabled (systemd-timesyncd: {sync.timesyncd}; a {sync.virtualization} container "
            "keeps its host's clock, but a VM from the same setup would drift)", f"invoke provision -e {env.name}")
        return
    if sync.timedatectl in ("yes", "no"):
        assert sync.timedatectl == "yes", problem(
            "the server's clock is not synchronised (timedatectl: NTPSynchronized=no)",
            "timedatectl timesync-status; systemctl status systemd-timesyncd chrony")
        return
    if sync.chrony != "unavailable" and sync.chrony:
        assert "normal" in sync.chrony.lower(), problem(f"chrony is not synchronised ({sync.chrony})",
                                                        "chronyc tracking")
        return
    assert sync.adjtimex not in ("", "unavailable", "5"), problem(
        "no time synchronisation: no timedatectl or chrony answers and the kernel reports its clock "
        "unsynchronised (adjtimex TIME_ERROR)", f"invoke provision -e {env.name}  (installs systemd-timesyncd)")
