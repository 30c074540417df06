"""What `invoke provision` makes of the server, read as it is in force (not as files say it should
be): `sshd -T`, the loaded nftables ruleset, `docker info`, `apt-config dump`, swap, journald, time
sync. Each check fails on a host that lacks its item and names the fix: `invoke provision`."""

from __future__ import annotations

import pytest

from .checks import listing, problem

pytestmark = pytest.mark.provisioned

FIX = "invoke provision -e {env}  (it says what it changes; --dry-run first to see)"


def fix(env) -> str:
    return FIX.format(env=env.name)


def test_the_host_is_as_provisioning_leaves_it(provisioned, env):
    left = {name: p.changes for name, p in provisioned.plans.items() if p.changes}
    lines = [f"{name}: {c}" for name, changes in left.items() for c in changes]
    assert not lines, problem(f"the server differs from what `invoke provision` makes of it: {listing(lines, 8)}",
                              fix(env))


def test_sshd_effective_settings_are_hardened(provisioned, env):
    from opskit.provision import sshd

    effective = provisioned.values["sshd"][0]
    assert effective.known, problem(f"could not read sshd's settings (`sshd -T`): {effective.error or 'no sshd'}",
                                    "sudo sshd -T")
    # the rules every host must keep, whatever the inventory says
    must = {"permitrootlogin": "no", "passwordauthentication": "no", "kbdinteractiveauthentication": "no",
            "x11forwarding": "no", "allowagentforwarding": "no", "allowstreamlocalforwarding": "no",
            "permittunnel": "no", "gatewayports": "no"}
    bad = [f"{k} {effective.get(k)}" for k, v in must.items() if effective.get(k) != v]
    if int(effective.get("maxauthtries") or 99) > 3:
        bad.append(f"maxauthtries {effective.get('maxauthtries')}")
    for keyword in ("kexalgorithms", "ciphers", "macs", "hostkeyalgorithms"):
        bad += [f"{keyword} offers {a}" for a in (effective.get(keyword) or "").split(",") if weak(a)]
    bad += sshd.differences(provisioned.host, effective)
    assert not bad, problem(f"sshd, as `sshd -T` reports it: {listing(bad, 8)}", fix(env))


def weak(algorithm: str) -> bool:
    """What auditors fail: NIST curves (kex and host keys), SHA-1, MD5, CBC and 3DES, 64-bit UMAC, DSA."""
    return (algorithm.startswith(("ecdh-sha2-nistp", "ecdsa-sha2-nistp", "ssh-dss")) or algorithm == "ssh-rsa"
            or "sha1" in algorithm or "md5" in algorithm or algorithm.endswith("-cbc") or "3des" in algorithm
            or algorithm.startswith("umac-64") or "arcfour" in algorithm)


def test_firewall_denies_inbound_by_default(provisioned, env):
    from opskit.provision import firewall

    fw = provisioned.values["firewall"][0]
    table = fw.table(firewall.FAMILY, firewall.TABLE) if fw.ruleset is not None else None
    assert table is not None, problem(
        f"no firewall table {firewall.FAMILY} {firewall.TABLE} is loaded "
        f"({'nft is not installed' if not fw.installed else fw.error or 'not loaded'})", fix(env))
    allowed = {f"{firewall.ssh_port(provisioned.host)}/tcp", *(str(o) for o in provisioned.host.settings.allow)}
    bad = [] if table.input_policy == "drop" else [f"input policy {table.input_policy}"]
    bad += [f"input accepts {p} from anyone" for p in table.open_ports() if p not in allowed]
    bad += [f"{p} allowed but not open" for p in allowed if p not in table.open_ports()]
    if not table.ssh_limits():
        bad.append("new SSH connections are not rate-limited")
    if fw.enabled != "enabled":
        bad.append(f"nftables.service is {fw.enabled or 'missing'}: a reboot would come up with no firewall")
    assert not bad, problem(f"the loaded firewall: {listing(bad, 8)}", f"sudo nft list ruleset; {fix(env)}")


def test_firewall_keeps_published_ports_closed(provisioned, env):
    """Docker's published ports go through FORWARD, not INPUT: only the allowed ones may pass."""
    from opskit.provision import firewall

    fw = provisioned.values["firewall"][0]
    table = fw.table(firewall.FAMILY, firewall.TABLE) if fw.ruleset is not None else None
    assert table is not None and table.forward_policy == "drop", problem(
        "no forward chain drops what Docker publishes: a container publishing a port on 0.0.0.0 is "
        "reachable from anywhere, past the input rules", f"sudo nft list chain inet opskit forward; {fix(env)}")
    allowed = {str(o) for o in provisioned.host.settings.allow}
    extra = [p for p in table.forwarded_ports() if p not in allowed]
    assert not extra, problem(f"published ports let through from outside besides {listing(sorted(allowed))}: "
                              f"{listing(extra)}", fix(env))
    assert not firewall.loaded_differences(fw), problem(
        f"{listing(firewall.loaded_differences(fw))}", f"sudo nft list ruleset; {fix(env)}")


def test_docker_keeps_containers_running_through_its_restarts(provisioned, env):
    daemon = provisioned.values["dockerd"][1]
    assert daemon.answers, problem(f"dockerd does not answer (docker.service: {daemon.unit})",
                                   "sudo systemctl status docker; sudo journalctl -u docker -n 50")
    settings = provisioned.host.settings
    bad = []
    if daemon.live_restore is not settings.live_restore:
        bad.append(f"live-restore is {'on' if daemon.live_restore else 'off'} (a dockerd restart or upgrade "
                   "stops every container)" if settings.live_restore else "live-restore is on")
    if daemon.logging_driver != "json-file":
        bad.append(f"the default log driver is {daemon.logging_driver}, not json-file with a size cap")
    if daemon.no_new_privileges is not settings.no_new_privileges:
        bad.append(f"no-new-privileges is {'on' if daemon.no_new_privileges else 'off'} by default")
    assert not bad, problem(f"Docker's daemon, as `docker info` reports it: {listing(bad)}",
                            f"docker info; sudo cat /etc/docker/daemon.json; {fix(env)}")


def test_unattended_upgrades_leave_docker_alone(provisioned, env):
    policy = provisioned.values["upgrades"][1]
    settings = provisioned.host.settings
    if not settings.upgrades:
        assert not policy.is_enabled, problem("unattended upgrades run although the inventory turns them off",
                                              fix(env))
        return
    bad = [] if policy.is_enabled else ["unattended-upgrade is not run by the daily APT job"]
    if not policy.program:
        bad.append("unattended-upgrades is not installed")
    if not any("security" in o.lower() for o in policy.origins):
        bad.append("no security origin is allowed")
    bad += [f"{p} is not held back" for p in ("docker.io", "containerd", "runc", "containerd.io", "docker-ce")
            if not policy.is_held(p)]
    bad += [f"{unit} is {state or 'missing'}" for unit, state in policy.timers.items() if state != "enabled"]
    assert not bad, problem(f"the unattended-upgrades policy APT reads (apt-config dump): {listing(bad)}", fix(env))


def test_swap_and_the_journal_cap_are_in_force(provisioned, env):
    from opskit.facts.system import size_bytes
    from opskit.provision import memory

    facts = provisioned.values["memory"][1]
    settings, in_container = provisioned.host.settings, provisioned.host.in_container
    bad = []
    if settings.swap_mb:
        swap = facts.swap_file
        if not (swap.exists and swap.is_swap and swap.mode == 0o600):
            bad.append(f"{memory.SWAP_FILE} is missing, not a swap area, or not mode 0600")
        elif not in_container and memory.SWAP_FILE not in facts.active_swaps:
            bad.append(f"{memory.SWAP_FILE} is not in use (swapon --show)")
        if not in_container and facts.swappiness != settings.swappiness:
            bad.append(f"vm.swappiness is {facts.swappiness}, wanted {settings.swappiness}")
    cap = size_bytes(settings.journal_max_use)
    if facts.journald_max_use is None or facts.journald_max_use > cap * 1.05:  # it prints one decimal
        bad.append(f"journald runs with no cap of {settings.journal_max_use} "
                   f"(it reports {facts.journald_max_use or 'none'} bytes)")
    assert not bad, problem(f"memory and logs: {listing(bad)}", f"swapon --show; journalctl --disk-usage; {fix(env)}")
