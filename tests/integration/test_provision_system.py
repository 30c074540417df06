"""The upgrades, memory and dockerd items for real, each on a scratch VPS box of its own (systemd,
a bare Debian 12): the facts read on the box, the plan's steps run through the Runner, then the
effective state checked with the tools themselves (apt-config, unattended-upgrade, journald,
docker info, a container's /proc/self/status), and a second plan that has nothing to do.

Packages come as the packages item brings them: Debian's, from the mirror the box names (Docker
from trixie, only the named packages). The box is a container: the memory item must leave this
machine's kernel alone (no swapon, no sysctl), which is checked here on /proc."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from opskit import ROOT, inventory
from opskit.facts import packages as package_facts
from opskit.facts import system
from opskit.facts.base import read
from opskit.provision import distros, dockerd, memory, upgrades
from opskit.provision.item import Host
from opskit.runner import Runner
from opskit.steps import Plan
from tests.integration.box import Box

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

TRIXIE = """Types: deb
URIs: {mirror}
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# a tiny HTTP answer on 8080: the published port that must outlive dockerd's restart
SERVE = ("perl", "-MIO::Socket::INET", "-e",
         '$s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die;'
         ' while ($c = $s->accept) { print $c "HTTP/1.0 200 OK\\r\\n\\r\\nalive\\n"; close $c }')


@pytest.fixture(scope="module")
def env():
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    return inventory.parse(raw, "local", with_secrets=False)


@pytest.fixture
def box():
    with Box() as b:
        yield b


def host_for(box: Box, env, **settings) -> Host:
    """The Host as `provision` makes it: in_container from the box's own virtualization fact."""
    virt = read(box, package_facts.packages()).virtualization
    provision = dataclasses.replace(env.provision, **settings)
    return Host(provision, dataclasses.replace(env, provision=provision), distros.DISTROS[provision.distribution],
                in_container=virt != "none")


def plan_of(box: Box, item, host: Host):
    return item.plan(host, *read(box, *item.facts(host)))


def apply(box: Box, item_plan) -> float:
    started = time.monotonic()
    Runner(box, out=io.StringIO()).run(Plan(item_plan.item, list(item_plan.steps)))
    return time.monotonic() - started


def stats(box: Box, *paths: str) -> str:
    """inode, size, mtime (ns) and ctime of each path: what any write, even of the same bytes, changes."""
    return box.sh("stat -c '%n %i %s %.9Y %.9Z' " + " ".join(paths))


def apt_install(box: Box, *packages: str, trixie: bool = False) -> None:
    if trixie:
        mirror = box.sh("awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources").strip()
        box.run(["sh", "-c", "cat > /etc/apt/sources.list.d/trixie.sources"],
                stdin=TRIXIE.format(mirror=mirror).encode())
        box.sh("printf 'Package: *\\nPin: release n=trixie\\nPin-Priority: 100\\n' > /etc/apt/preferences.d/trixie-low")
    box.sh("apt-get update -qq")
    box.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
           + " ".join(packages) + " >/dev/null")


def report(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n[provision] {text}")


# -- upgrades ----------------------------------------------------------------------------------------


def test_upgrades_installs_what_is_pending_at_once_and_holds_what_it_names(box, env, capsys):
    h = host_for(box, env)
    first = plan_of(box, upgrades, h)  # facts of a bare box, read before any step as provision does
    assert f"{upgrades.CONF}: missing" in first.changes
    apt_install(box, *upgrades.packages(h))  # what the packages item does before this item's steps

    # the real unattended-upgrade, run by the item on the security updates pending for this box
    pending = [p.name for p in read(box, system.pending_upgrades()) if p.is_security]
    assert len(pending) >= 2, f"a fresh bookworm box should have security updates pending, found {pending}"
    held = "tzdata" if "tzdata" in pending else pending[-1]
    h_held = host_for(box, env, hold=(*env.provision.hold, held))
    seconds = apply(box, plan_of(box, upgrades, h_held))
    left = [p.name for p in read(box, system.pending_upgrades()) if p.is_security]
    assert left == [held], (pending, left)  # all installed at once but the one held

    policy = read(box, system.upgrades())
    assert policy.program == "/usr/bin/unattended-upgrade" and policy.is_enabled
    assert policy.is_held("docker.io") and policy.is_held("containerd") and not policy.is_held("openssl")
    dump = box.sh("apt-config dump")
    assert 'Unattended-Upgrade::Package-Blacklist:: "^(docker\\.io)$";' in dump
    assert 'Unattended-Upgrade::Origins-Pattern:: "origin=Debian,codename=${distro_codename},label=Debian";' \
        not in dump  # Debian's default file allows point releases: ours clears that
    log = box.sh("cat /var/log/unattended-upgrades/unattended-upgrades.log")
    origins = re.search(r"Allowed origins are: (.*)$", log, re.M).group(1).split(", ")
    assert origins and all("label=Debian-Security" in o for o in origins), origins
    assert re.search(r"Initial blacklist: .*\^\(docker\\\.io\)\$", log, re.M), log[:2000]

    before = stats(box, upgrades.CONF)
    second = plan_of(box, upgrades, h_held)
    assert (second.changes, second.steps) == ((), ())
    apply(box, second)
    assert stats(box, upgrades.CONF) == before

    apply(box, plan_of(box, upgrades, h))  # the hold lifted: the policy changes, and so it runs again
    assert [p.name for p in read(box, system.pending_upgrades()) if p.is_security] == []
    report(capsys, f"upgrades: applied with {len(pending)} security updates pending in {seconds:.1f}s, "
                   f"installed all but the held {held}")


# -- memory -------------------------------------------------------------------------------------------


def test_memory_files_are_written_and_this_machines_kernel_is_left_alone(box, env, capsys):
    host_swaps, host_swappiness = Path("/proc/swaps").read_text(), Path("/proc/sys/vm/swappiness").read_text()
    h = host_for(box, env, swap_mb=256)
    assert h.in_container  # the box is a container: the runner's rule, from the fact
    first = plan_of(box, memory, h)
    assert any("not switched on" in n for n in first.notes)
    seconds = apply(box, first)

    m = read(box, system.memory(memory.SWAP_FILE))
    assert m.swap_file == system.SwapFile(memory.SWAP_FILE, 256 * memory.MIB, 0o600, "root", "root", True)
    assert m.journald_setting("SystemMaxUse") == "500M" and m.journald_setting("Storage") == "persistent"
    assert m.journald_max_use == 500 * memory.MIB  # the running journald took it: it was restarted
    assert memory.FSTAB_LINE in box.sh("cat /etc/fstab")
    assert box.sh(f"cat {memory.SYSCTL}").strip().endswith("vm.swappiness = 10")
    # what a booting box would do with that fstab line: systemd ignores swap entries in a container
    generated = box.sh("mkdir -p /tmp/gen && /lib/systemd/system-generators/systemd-fstab-generator "
                       "/tmp/gen /tmp/gen /tmp/gen 2>&1; ls -R /tmp/gen")
    assert "ignoring fstab swap entry for /swapfile" in generated and "swapfile.swap" not in generated

    paths = (memory.SWAP_FILE, memory.FSTAB, memory.SYSCTL, memory.JOURNALD)
    before = stats(box, *paths)
    journald_pid = box.sh("systemctl show -p MainPID --value systemd-journald")
    second = plan_of(box, memory, h)
    assert (second.changes, second.steps) == ((), ())
    apply(box, second)
    assert stats(box, *paths) == before
    assert box.sh("systemctl show -p MainPID --value systemd-journald") == journald_pid

    # a smaller cap: the file changes, journald restarts and takes it
    apply(box, plan_of(box, memory, host_for(box, env, swap_mb=256, journal_max_use="200M")))
    assert read(box, system.memory(memory.SWAP_FILE)).journald_max_use == 200 * memory.MIB

    # swap 0: opskit's swap file goes, with its fstab line, and still no swapoff here
    none = plan_of(box, memory, host_for(box, env, swap_mb=0, journal_max_use="200M"))
    assert [s.title for s in none.steps] == ["remove /swapfile", "write /etc/fstab"]
    apply(box, none)
    assert box.run(["test", "-e", memory.SWAP_FILE]).returncode == 1
    assert memory.FSTAB_MARK not in box.sh("cat /etc/fstab")
    assert plan_of(box, memory, host_for(box, env, swap_mb=0, journal_max_use="200M")).steps == ()

    assert Path("/proc/swaps").read_text() == host_swaps
    assert Path("/proc/sys/vm/swappiness").read_text() == host_swappiness
    report(capsys, f"memory: applied in {seconds:.1f}s; /proc/swaps and vm.swappiness of this machine unchanged")


# -- dockerd ------------------------------------------------------------------------------------------


def info(box: Box) -> dict:
    return json.loads(box.sh("docker info --format '{{json .}}'"))


def container(box: Box, name: str) -> dict:
    return json.loads(box.sh(f"docker inspect {name}"))[0]


def answer(box: Box, address: str, port: int) -> str:
    """What the server on `address:port` inside the box says (traffic stays inside the box)."""
    return box.run(["timeout", "5", "bash", "-c", f"exec 3<>/dev/tcp/{address}/{port} && cat <&3"]).stdout.decode()


def test_dockerd_takes_daemon_json_and_running_containers_survive_its_restart(box, env, capsys):
    h = host_for(box, env)
    # a bare box: the file is written (validated once dockerd is there), dockerd starts with it
    bare = plan_of(box, dockerd, h)
    assert [s.title for s in bare.steps][0] == f"write {dockerd.DAEMON_JSON}"
    apply(box, bare)
    assert plan_of(box, dockerd, h).steps == ()
    started = time.monotonic()
    apt_install(box, "docker.io/trixie", "docker-cli/trixie", trixie=True)
    install_s = time.monotonic() - started
    i = info(box)
    assert i["ServerVersion"].startswith("26.") and i["LiveRestoreEnabled"] is True
    assert "name=no-new-privileges" in i["SecurityOptions"] and i["LoggingDriver"] == "json-file"
    assert plan_of(box, dockerd, h).steps == ()

    subprocess.run(f"docker save opskit/base:bookworm | docker exec -i {box.name} docker load", shell=True,
                   check=True, capture_output=True, timeout=300)
    nnp = box.sh("docker run --rm opskit/base:bookworm grep NoNewPrivs /proc/self/status")
    assert nnp.split() == ["NoNewPrivs:", "1"]
    box.sh("docker run --name logcap opskit/base:bookworm true")
    assert container(box, "logcap")["HostConfig"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-size": env.logging.max_size, "max-file": str(env.logging.max_files)}}

    # a container with a restart policy, running through both changes below
    box.sh("docker run -d --name keep --restart unless-stopped -p 18080:8080 opskit/base:bookworm "
           + " ".join(f"'{a}'" for a in SERVE))
    for _ in range(50):
        if "alive" in answer(box, "127.0.0.1", 18080):
            break
        time.sleep(0.2)
    first = container(box, "keep")["State"]

    # Docker's defaults back (live-restore off, userland proxy on): reload first, so the daemon that
    # stops has live-restore off and stops the container cleanly, and the new one restarts it by its
    # policy (restarted with live-restore still on, the new daemon would kill it for good)
    defaults = plan_of(box, dockerd, host_for(box, env, live_restore=False, userland_proxy=True))
    assert [s.title.split(" (")[0] for s in defaults.steps] == [
        f"write {dockerd.DAEMON_JSON} with only live-restore changed", "reload dockerd", f"write {dockerd.DAEMON_JSON}",
        "restart dockerd for userland-proxy"]
    apply(box, defaults)
    assert info(box)["LiveRestoreEnabled"] is False
    for _ in range(50):
        if container(box, "keep")["State"]["Status"] == "running" and "alive" in answer(box, "127.0.0.1", 18080):
            break
        time.sleep(0.2)
    again = container(box, "keep")["State"]
    assert again["Status"] == "running" and again["StartedAt"] != first["StartedAt"], again

    # back to ours: reload (live-restore on), then restart; the container lives through it
    before = container(box, "keep")["State"]
    dockerd_pid = box.sh("systemctl show -p MainPID --value docker")
    change = plan_of(box, dockerd, h)
    assert [s.title.split(" (")[0] for s in change.steps] == [
        f"write {dockerd.DAEMON_JSON} with only live-restore changed", "reload dockerd", f"write {dockerd.DAEMON_JSON}",
        "restart dockerd for userland-proxy"]
    seconds = apply(box, change)
    after = container(box, "keep")["State"]
    restarted_pid = box.sh("systemctl show -p MainPID --value docker")
    assert restarted_pid != dockerd_pid  # it did restart
    assert (after["Status"], after["StartedAt"], after["Pid"]) == (before["Status"], before["StartedAt"],
                                                                   before["Pid"])
    assert container(box, "keep")["RestartCount"] == 0
    assert "alive" in answer(box, "127.0.0.1", 18080)  # its published port, now without the userland proxy
    i = info(box)
    assert i["LiveRestoreEnabled"] is True and "name=no-new-privileges" in i["SecurityOptions"]

    before_stats = stats(box, dockerd.DAEMON_JSON)
    second = plan_of(box, dockerd, h)
    assert (second.changes, second.steps) == ((), ())
    apply(box, second)
    assert stats(box, dockerd.DAEMON_JSON) == before_stats
    assert box.sh("systemctl show -p MainPID --value docker") == restarted_pid
    report(capsys, f"dockerd: Docker installed in {install_s:.0f}s; reload + restart with a live container "
                   f"in {seconds:.1f}s, container kept (StartedAt {after['StartedAt']})")
