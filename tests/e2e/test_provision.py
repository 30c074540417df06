"""`invoke provision` end to end on the simulated VPS, as issue 12's "Done when" says: from a bare
box (`vps.up --bare`) to a host that deploys and passes the smoke suite; a second run that changes
nothing; ssh-audit; each item undone by hand turning its smoke check red until provisioning
restores it; a reboot that brings the stack back with no deploy."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from opskit import ROOT, inventory
from opskit.provision.run import ITEMS
from opskit.sim import vps
from opskit.sim.vps_config import VpsConfig

pytestmark = pytest.mark.e2e

CONTAINER_NAME = "opskit-vps"


def invoke(*args, timeout: float = 1800) -> subprocess.CompletedProcess:
    """A task exactly as a person runs it (README's `scripts/invoke`)."""
    done = subprocess.run([str(ROOT / "scripts" / "invoke"), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    done.output = done.stdout + done.stderr
    assert "Traceback" not in done.output, done.output[-3000:]
    return done


def timed(*args, **kw):
    started = time.monotonic()
    done = invoke(*args, **kw)
    return done, time.monotonic() - started


def in_vps(config, script: str, check: bool = True) -> str:
    """A command run by hand on the VPS, as root (the provider's console: `docker exec`)."""
    done = subprocess.run(["docker", "exec", config.container, "sh", "-c", script], capture_output=True, text=True,
                          timeout=300)
    if check:
        assert done.returncode == 0, f"{script}: {done.stdout}{done.stderr}"
    return done.stdout


def managed_state(config) -> str:
    """What a second run must leave as it is: every file provisioning manages (content, mode,
    inode, mtime) and the start times of the services it restarts."""
    return in_vps(config, r"""
        for f in /etc/ssh/sshd_config.d/00-opskit.conf /etc/nftables.conf /etc/docker/daemon.json \
                 /etc/apt/apt.conf.d/*opskit* /etc/sysctl.d/*opskit* /etc/systemd/journald.conf.d/*opskit* \
                 /etc/sudoers.d/opskit-deploy /home/deploy/.ssh/authorized_keys /etc/fstab; do
            [ -e "$f" ] && stat -c '%n %a %U %i %Y' "$f" && sha256sum "$f"
        done
        for unit in ssh docker containerd nftables systemd-journald; do
            printf '%s ' "$unit"; systemctl show -p ActiveEnterTimestampMonotonic --value "$unit"
        done
        nft --terse --stateless list ruleset 2>/dev/null | sha256sum  # no set elements, no counters
    """)


@pytest.fixture(scope="module")
def config():
    return VpsConfig.from_environment(inventory.load("local", with_secrets=False))


@pytest.fixture(scope="module")
def runs(config, vps_session):
    """A new bare VPS; `provision --dry-run`; `provision --yes`; `provision --yes` again."""
    vps.down(config)
    up, up_s = timed("vps.up", "--bare")
    assert up.returncode == 0, up.output[-3000:]
    dry, _ = timed("provision", "--dry-run")
    dry_left_it_bare = in_vps(config, "command -v docker sudo nft || true").strip() == ""
    first, first_s = timed("provision", "--yes")
    assert first.returncode == 0, first.output[-5000:]
    before = managed_state(config)
    second, second_s = timed("provision", "--yes")
    after = managed_state(config)
    dry_again, _ = timed("provision", "--dry-run")
    print(f"\nvps.up --bare {up_s:.1f}s; provision of the bare VPS {first_s:.1f}s; second run {second_s:.1f}s")
    yield {"dry": dry, "dry_left_it_bare": dry_left_it_bare, "first": first, "second": second,
           "dry_again": dry_again, "before": before, "after": after}
    vps_session.reload()


@pytest.fixture(scope="module")
def deployed(runs, vps_session):
    done, seconds = timed("deploy", "--yes")
    assert done.returncode == 0, done.output[-5000:]  # the smoke suite runs at its end, and passes
    print(f"\ndeploy to the newly provisioned VPS (smoke suite included): {seconds:.1f}s")
    return vps_session.reload()


def test_dry_run_on_a_bare_vps_lists_every_item_and_changes_nothing(runs):
    text = runs["dry"].output
    assert runs["dry"].returncode == 0, text[-3000:]
    for item in ITEMS:
        if item.NAME == "backup_timer":  # `local` has no `backup:`: no timer to make (test_backups.py makes one)
            assert "  backup_timer: no change" in text
            continue
        assert f"  {item.NAME}: " in text and f"  {item.NAME}: no change" not in text, item.NAME
    assert "(dry run: nothing was changed)" in text and runs["dry_left_it_bare"]


def test_the_first_run_logs_in_as_root_and_converges(runs):
    text = runs["first"].output
    assert "logged in as root" in text and "items changed" in text


def test_a_second_run_changes_nothing_and_says_so_for_every_item(runs):
    text = runs["second"].output
    assert runs["second"].returncode == 0, text[-3000:]
    assert "logged in as deploy (sudo)" in text  # root is refused now
    for item in ITEMS:
        assert f"  {item.NAME}: no change" in text, item.NAME
    assert "provision: no change in any of" in text and "==>" not in text
    assert runs["after"] == runs["before"]  # same files, modes, inodes, mtimes; no service restarted


def test_dry_run_on_a_provisioned_vps_lists_no_change(runs):
    text = runs["dry_again"].output
    assert all(f"  {item.NAME}: no change" in text for item in ITEMS) and "plan provision." not in text


def test_root_can_no_longer_log_in(runs, config):
    done = subprocess.run(vps.ssh_command(config, "root").split() + ["-o", "BatchMode=yes", "true"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 255 and "Permission denied" in done.stderr


def test_a_deploy_then_works_with_no_further_step_and_the_smoke_suite_is_green(deployed):
    states = deployed.services()
    assert {s: st for s, st in states.items() if st != ("running", "healthy")} == {}


def test_ssh_audit_finds_no_failure(deployed, config):
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "ssh-audit"), "-j", "-p", str(config.ssh_port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    fails = [f for kind in ("kex", "key", "enc", "mac") for f in report.get(kind, [])
             if f.get("notes", {}).get("fail")]
    warns = [f["algorithm"] for kind in ("kex", "key", "enc", "mac") for f in report.get(kind, [])
             if f.get("notes", {}).get("warn")]
    print(f"\nssh-audit: {len(fails)} fail, {len(warns)} warn ({', '.join(warns) or 'none'})")
    assert fails == [], fails


UNDO = {
    # item: (what a person does by hand on the VPS, the smoke check that must turn red)
    "sshd": ("sed -i 's/^X11Forwarding no/X11Forwarding yes/' /etc/ssh/sshd_config.d/00-opskit.conf && "
             "systemctl reload ssh", "test_sshd_effective_settings_are_hardened"),
    "firewall": ("nft add chain inet opskit forward '{ policy accept; }'", "test_firewall_keeps_published_ports_closed"),
    # a reload applies live-restore (a restart with it off would kill the stack for good)
    "live-restore": ("sed -i 's/\"live-restore\": true/\"live-restore\": false/' /etc/docker/daemon.json && "
                     "systemctl reload docker && sleep 2", "test_docker_keeps_containers_running_through_its_restarts"),
    "held packages": ("rm /etc/apt/apt.conf.d/60opskit-upgrades",
                      "test_unattended_upgrades_leave_docker_alone"),
}


@pytest.mark.parametrize("item", list(UNDO))
def test_an_item_undone_by_hand_turns_its_check_red_and_provision_restores_it(deployed, config, item):
    undo, check = UNDO[item]
    assert invoke("smoke", "-k", check).returncode == 0
    in_vps(config, undo)
    red = invoke("smoke", "-k", check)
    assert red.returncode == 6 and f"FAIL {check}" in red.output and "invoke provision" in red.output, \
        red.output[-3000:]
    fixed = invoke("provision", "--yes")
    assert fixed.returncode == 0 and "items changed" in fixed.output, fixed.output[-3000:]
    assert invoke("smoke", "-k", check).returncode == 0


def test_a_container_publishing_another_port_is_not_reachable_from_outside_the_vps(deployed, config):
    """From a container of our own on the VPS's own network: SSH and HTTPS answer, a port a
    container inside the VPS publishes on 0.0.0.0 does not (while it answers inside)."""
    address = subprocess.run(["docker", "inspect", "--format",
                              "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % config.network,
                              config.container], capture_output=True, text=True, check=True).stdout.strip()
    try:
        in_vps(config, "docker rm -f opskit-fwprobe >/dev/null 2>&1; docker run -d --name opskit-fwprobe "
                       "-p 0.0.0.0:8081:6379 opskit/redis:7 redis-server --protected-mode no >/dev/null")
        in_vps(config, "bash -c 'for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null && exit 0; "
                       "sleep 0.2; done; exit 1'")  # it listens: the control
        probe = ("import socket, sys\nfor port in (22, 443, 8081):\n"
                 "    s = socket.socket(); s.settimeout(3)\n"
                 "    try:\n        s.connect((sys.argv[1], port)); print(port, 'open')\n"
                 "    except OSError as e:\n        print(port, 'closed', type(e).__name__)\n")
        done = subprocess.run(["docker", "run", "--rm", "--network", config.network, "opskit/python:3.11",
                               "python3", "-c", probe, address], capture_output=True, text=True, timeout=120)
        lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
        assert lines["22"] == "open" and lines["443"] == "open", done.stdout + done.stderr
        assert lines["8081"].startswith("closed"), done.stdout
    finally:
        in_vps(config, "docker rm -f opskit-fwprobe", check=False)


def test_a_reboot_brings_the_stack_back_healthy_with_no_deploy(deployed, config):
    subprocess.run(["docker", "restart", "--time", "60", config.container], check=True, capture_output=True,
                   timeout=300)
    in_vps(config, "vps-ready 120")
    deadline, states = time.monotonic() + 240, {}
    while time.monotonic() < deadline:
        try:
            states = deployed.reload().services()
        except Exception:  # noqa: BLE001 (sshd and Docker are still coming up)
            states = {}
        if states and all(st == ("running", "healthy") for st in states.values()):
            break
        time.sleep(3)
    assert states and all(st == ("running", "healthy") for st in states.values()), states
    green = invoke("smoke")
    assert green.returncode == 0, green.output[-4000:]
    # a reboot keeps what provisioning made: the firewall and sshd are loaded again, with no run
    again = invoke("provision", "--dry-run")
    assert all(f"  {item.NAME}: no change" in again.output for item in ITEMS), again.output[-3000:]
