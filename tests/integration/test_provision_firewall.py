"""The firewall item for real, on a box (systemd, sshd, Debian 12) with Docker 26.1 in it, probed
from containers of the test's own on a network the test creates (IPv4 and IPv6):

- before the item, a port that a container in the box publishes on 0.0.0.0 is reachable (the
  control); a first try whose firewall cuts SSH fails its proof and is put back;
- after it, that port is not, while 80 (published too) and sshd are; a second plan is empty;
- over 30 new SSH connections a minute from one source are dropped, another source still gets in;
- restarting dockerd keeps our table, restarting nftables keeps Docker's rules (and without our
  drop-in it would not), a reboot loads the ruleset again;
- a rule or chain deleted by hand is found by a fresh plan and put back.

The guard's proof is real: the box publishes its sshd on 127.0.0.1, and the test gives it a
deploy user with a key, sudo, and the box's host key pinned.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from opskit import ROOT, inventory
from opskit.errors import StepFailed
from opskit.facts.base import read
from opskit.inventory.model import Target
from opskit.provision import distros, firewall, guard, item
from opskit.runner import Runner
from opskit.steps import Plan
from tests.integration.box import Box

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

PROBE_IMAGE = "opskit/python:3.11"
WEB = "opskit-fwtest/httpd:1"  # busybox httpd alone, made inside the box (1 MB, no image to ship)
BLOCKED, WEB_PORT = 8081, 80
# Per target, all at once: a TCP connect (timeout: dropped; refused), then a request and what
# answers it: http (the web container), ssh (sshd's banner), silent (a socket nobody serves).
PROBE = r"""
import socket, sys
from concurrent.futures import ThreadPoolExecutor
def one(target, talk=True):
    host, port = target.rsplit(":", 1)
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET); s.settimeout(float(sys.argv[1]))
    try:
        try: s.connect((host.strip("[]"), int(port)))
        except socket.timeout: return "timeout"
        except ConnectionRefusedError: return "refused"
        if not talk: return "open"
        try: s.sendall(b"GET / HTTP/1.0\r\n\r\n"); head = s.recv(8)
        except OSError: return "silent"
        return "http" if head.startswith(b"HTTP/") else "ssh" if head.startswith(b"SSH-") else "silent"
    finally: s.close()
with ThreadPoolExecutor(16) as pool: print(" ".join(pool.map(one, sys.argv[2:])))
"""
# N new connections from one source, one after the other while they get in; then the rest at once
BURST = PROBE.rsplit("with ThreadPoolExecutor", 1)[0] + r"""
n, target, got = int(sys.argv[2]), sys.argv[3], []
while len(got) < n and (not got or got[-1] == "open"): got.append(one(target, talk=False))
with ThreadPoolExecutor(16) as pool: got += list(pool.map(lambda t: one(t, talk=False), [target] * (n - len(got))))
print(got.count("open"), got.count("timeout"))
"""
SETUP = r"""
set -eu
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
    "$mirror" /usr/share/keyrings/debian-archive-keyring.gpg > /etc/apt/sources.list.d/trixie.sources
printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie-low
# as the dockerd item leaves it: without the userland proxy, only Docker's DNAT rules reach a container
mkdir -p /etc/docker && echo '{"userland-proxy": false}' > /etc/docker/daemon.json
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nftables sudo busybox-static iptables \
    docker.io/trixie docker-cli/trixie >/dev/null
useradd --create-home --shell /bin/bash deploy
install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh
install -m 0600 -o deploy -g deploy /dev/stdin /home/deploy/.ssh/authorized_keys
echo 'deploy ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy
root=$(mktemp -d); mkdir -p "$root/bin" "$root/www"; cp /bin/busybox "$root/bin/"; echo ok > "$root/www/index.html"
tar -C "$root" -c . \
    | docker import -c 'CMD ["/bin/busybox", "httpd", "-f", "-p", "8000", "-h", "/www"]' - "$1" >/dev/null
docker run -d --restart always --name web80 -p 80:8000 "$1" >/dev/null
docker run -d --restart always --name web8081 -p 8081:8000 "$1" >/dev/null
"""
TIMES: dict[str, float] = {}


def docker(*argv: str, check: bool = True, timeout: float = 180) -> str:
    done = subprocess.run(["docker", *argv], check=False, capture_output=True, text=True, timeout=timeout)
    assert not check or done.returncode == 0, f"docker {' '.join(argv)}: {done.stderr[-600:]}"
    return done.stdout.strip()


@dataclass(frozen=True)
class Env:
    """What the item reads of an inventory Environment: the SSH target (the guard's proof logs in
    there), and whether it is a simulated VPS (sshd on 22 inside, whatever port is published)."""

    ssh: Target
    vps: object = None


@dataclass
class Lab:
    box: Box
    network: str
    probe: str
    key: Path
    known_hosts: Path
    settings: object
    bare: item.ItemPlan  # the plan on the box before nftables was installed

    def address(self, v6: bool = False) -> str:
        field = "GlobalIPv6Address" if v6 else "IPAddress"
        fmt = f'{{{{(index .NetworkSettings.Networks "{self.network}").{field}}}}}'
        ip = docker("inspect", "--format", fmt, self.box.name)
        return f"[{ip}]" if v6 else ip

    def reach(self, *ports: int, v6: bool = False, container: str | None = None, timeout: float = 1.5) -> dict:
        """What the probe container finds at the box's ports: open, timeout (dropped) or refused."""
        host = self.address(v6)
        out = docker("exec", container or self.probe, "python3", "-c", PROBE, str(timeout),
                     *(f"{host}:{p}" for p in ports))
        return dict(zip(ports, out.split()))

    def served_inside(self, *ports: int) -> bool:
        """Whether the box itself reaches its published ports (the containers are up and published),
        so that a timeout from the probe means the firewall, not a container that is down."""
        ip = self.address()
        done = self.box.run(["python3", "-c", PROBE, "2", *(f"{ip}:{p}" for p in ports)])
        return done.stdout.decode().split() == ["http"] * len(ports)

    def wait_served(self, limit: float = 90) -> None:
        deadline = time.monotonic() + limit
        while not self.served_inside(WEB_PORT, BLOCKED):
            assert time.monotonic() < deadline, f"the box's web containers are not up: {self.box.sh('docker ps -a')}"
            time.sleep(0.5)

    def env(self, vps: bool = True, port: int | None = None) -> Env:
        """The box as an Environment: reached on its 127.0.0.1 port, its host key pinned (again:
        a reboot may publish another port)."""
        published = int(docker("port", self.box.name, "22/tcp").splitlines()[0].rsplit(":", 1)[1])
        host_key = self.box.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").split()
        self.known_hosts.write_text(f"[127.0.0.1]:{published} {host_key[0]} {host_key[1]}\n")
        return Env(Target("127.0.0.1", port or published, "deploy", self.key, self.known_hosts),
                   vps=True if vps else None)

    def host(self, env: Env) -> item.Host:
        return item.Host(self.settings, env, distros.DISTROS["debian-12"], in_container=True)

    def plan(self, env: Env | None = None) -> item.ItemPlan:
        host = self.host(env or self.env())
        return firewall.plan(host, *read(self.box, *firewall.facts(host)))

    def apply(self, env: Env | None = None) -> item.ItemPlan:
        """A fresh plan, run for real; a proof that fails is reverted at once, as `provision` does."""
        plan = self.plan(env)
        try:
            Runner(self.box).run(Plan("firewall", list(plan.steps)))
        except StepFailed:
            Runner(self.box).run(Plan("firewall.revert", [guard.revert_now(firewall.NAME)]))
            raise
        return plan

    def fact(self):
        return read(self.box, firewall.facts(self.host(self.env()))[0])


def timed(name: str, started: float) -> None:
    TIMES[name] = time.monotonic() - started


@pytest.fixture(scope="module")
def lab(tmp_path_factory, kit_images):
    tmp = tmp_path_factory.mktemp("firewall")
    key = tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    settings = inventory.parse(raw, "production", base=tmp, with_secrets=False).provision  # the defaults
    network = f"opskit-fwtest-{uuid.uuid4().hex[:8]}"
    v6 = uuid.uuid4().hex
    started = time.monotonic()
    with Box(publish=("127.0.0.1::22",)) as box:
        probe = f"{network}-probe"
        try:
            timed("box boot", started)
            host = item.Host(settings, Env(Target("127.0.0.1", 22, "deploy", key, tmp / "known_hosts"), True),
                             distros.DISTROS["debian-12"], in_container=True)
            bare = firewall.plan(host, *read(box, *firewall.facts(host)))
            started = time.monotonic()
            done = box.run(["sh", "-c", SETUP, "setup", WEB], stdin=Path(f"{key}.pub").read_bytes(), timeout=900)
            assert done.returncode == 0, done.output[-2000:]
            timed("install Docker, nftables, sudo; deploy user; web containers", started)
            # an IPv4 subnet of its own: one from Docker's pool can be the very one the box's own
            # engine gave its web network (CI saw 172.18.0.0/16 twice, and the connect refused)
            docker("network", "create", "--ipv6", "--subnet", f"fd{v6[:2]}:{v6[2:6]}:{v6[6:10]}::/64",
                   "--subnet", f"10.214.{int(v6[10:12], 16)}.0/24", network)
            docker("network", "connect", network, box.name)
            docker("run", "-d", "--name", probe, "--network", network, PROBE_IMAGE, "sleep", "infinity")
            lab = Lab(box, network, probe, key, tmp / "known_hosts", settings, bare)
            lab.wait_served()
            yield lab
        finally:
            docker("rm", "-f", probe, check=False)
            docker("network", "disconnect", "-f", network, box.name, check=False)
            docker("network", "rm", network, check=False)


@pytest.fixture(scope="module")
def before(lab) -> dict:
    """The control: what the probe reaches before the item (nothing filters yet)."""
    return lab.reach(BLOCKED, WEB_PORT, 22, 9999)


@pytest.fixture(scope="module")
def locked_out(lab, before) -> dict:
    """A first try whose firewall opens the published port instead of sshd's (as an inventory with
    the wrong ssh.port would): the proof's new login is dropped, and the old state comes back."""
    debian_default = lab.box.run(["cat", firewall.CONF]).stdout
    started = time.monotonic()
    wrong = lab.env(vps=False)
    with pytest.raises(StepFailed) as failed:
        lab.apply(wrong)
    timed("a first try that cuts SSH: proof fails, revert", started)
    return {"step": failed.value.step.title, "file": lab.box.run(["cat", firewall.CONF]).stdout,
            "default": debian_default, "tables": lab.box.sh("nft list tables"), "reach": lab.reach(BLOCKED, 22),
            "port": wrong.ssh.port}


@pytest.fixture(scope="module")
def applied(lab, locked_out) -> item.ItemPlan:
    started = time.monotonic()
    plan = lab.apply()
    timed("apply the item (guarded, proven)", started)
    return plan


def test_the_fact_copes_with_a_box_without_nft(lab):
    assert lab.bare.changes[2] == "table inet opskit is not loaded (nft is not installed yet)"
    assert lab.bare.guarded and "/etc/nftables.conf: missing" in lab.bare.changes


def test_before_the_item_a_published_port_is_reachable(before):
    assert before == {BLOCKED: "http", WEB_PORT: "http", 22: "ssh", 9999: "refused"}


def test_a_firewall_that_cuts_ssh_is_not_kept(lab, locked_out):
    assert locked_out["port"] != 22
    assert locked_out["step"].startswith("firewall: prove a NEW SSH login as deploy")
    assert locked_out["file"] == locked_out["default"] and b"flush ruleset" in locked_out["default"]
    assert "inet opskit" not in locked_out["tables"] and "ip nat" in locked_out["tables"]  # Docker's stay
    assert locked_out["reach"] == {BLOCKED: "http", 22: "ssh"}


def test_the_item_blocks_a_published_port_and_lets_web_and_ssh_in(lab, applied):
    assert applied.guarded and "/etc/nftables.conf: content differs" in applied.changes
    assert lab.served_inside(WEB_PORT, BLOCKED)
    assert lab.reach(BLOCKED, WEB_PORT, 22, 9999) == {BLOCKED: "timeout", WEB_PORT: "http", 22: "ssh",
                                                     9999: "timeout"}


def test_over_ipv6_too_and_neighbour_discovery_works(lab, applied):
    lab.box.sh("ip -6 neigh flush all")
    fresh = docker("run", "--rm", "--network", lab.network, PROBE_IMAGE, "python3", "-c", PROBE, "1.5",
                   *(f"{lab.address(v6=True)}:{p}" for p in (22, BLOCKED)))
    assert fresh.split() == ["ssh", "timeout"]  # a new neighbour found the box, and the box it


def test_a_second_plan_changes_nothing(lab, applied):
    assert lab.plan() == item.ItemPlan("firewall")


def test_the_fact_shows_the_effective_state(lab, applied):
    fw = lab.fact()
    table = fw.table("inet", "opskit")
    assert (fw.enabled, fw.active) == ("enabled", "active")
    assert table.input_policy == "drop" and table.forward_policy == "drop"
    assert table.open_ports() == ("22/tcp", "80/tcp", "443/tcp", "443/udp")
    assert table.forwarded_ports() == ("80/tcp", "443/tcp", "443/udp")
    assert table.ssh_limits() == ((22, 30, "minute", 30),) * 2
    assert fw.table("ip", "nat") is not None  # Docker's, left alone


def test_over_30_new_ssh_connections_a_minute_from_one_source_are_dropped(lab, applied, capsys):
    assert lab.settings.ssh_new_per_minute == 30  # the default
    burster = f"{lab.network}-burst"
    docker("run", "-d", "--name", burster, "--network", lab.network, PROBE_IMAGE, "sleep", "infinity")
    try:
        started = time.monotonic()
        opened, dropped = map(int, docker("exec", burster, "python3", "-c", BURST, "1", "45",
                                          f"{lab.address()}:22").split())
        seconds = time.monotonic() - started
        # a burst of 30 at once, then one more every 2 s
        assert 30 <= opened <= 30 + int(seconds / 2) + 1 and opened + dropped == 45, (opened, dropped, seconds)
        assert lab.reach(22) == {22: "ssh"}  # another source is not held back
    finally:
        docker("rm", "-f", burster, check=False)
    with capsys.disabled():
        print(f"\n[firewall] 45 new SSH connections from one source in {seconds:.1f}s: {opened} in, {dropped} dropped")


def test_our_table_survives_a_docker_restart(lab, applied):
    started = time.monotonic()
    lab.box.sh("systemctl restart docker")
    lab.wait_served()
    timed("systemctl restart docker, containers back", started)
    assert lab.reach(BLOCKED, WEB_PORT) == {BLOCKED: "timeout", WEB_PORT: "http"}
    assert lab.plan() == item.ItemPlan("firewall")


def test_dockers_rules_survive_a_restart_of_nftables(lab, applied):
    lab.box.sh("systemctl restart nftables")
    tables = set(lab.box.sh("nft list tables").replace("table ", "").splitlines())
    assert {"ip nat", "ip filter", "inet opskit"} <= tables
    assert lab.served_inside(WEB_PORT, BLOCKED)
    assert lab.reach(BLOCKED, WEB_PORT) == {BLOCKED: "timeout", WEB_PORT: "http"}


def test_without_our_drop_in_a_restart_of_nftables_would_cut_dockers_ports(lab, applied):
    lab.box.sh(f"rm {firewall.DROPIN} && systemctl daemon-reload && systemctl restart nftables")
    try:
        assert "ip nat" not in lab.box.sh("nft list tables")  # Debian's `nft flush ruleset` took Docker's
        assert lab.reach(WEB_PORT) == {WEB_PORT: "silent"}  # no DNAT: only the socket dockerd holds for the port
        assert lab.plan().changes == (f"{firewall.DROPIN}: missing",)
        lab.apply()
    finally:
        lab.box.sh("systemctl restart docker")
        lab.wait_served()
    assert lab.plan() == item.ItemPlan("firewall")
    assert lab.reach(BLOCKED, WEB_PORT) == {BLOCKED: "timeout", WEB_PORT: "http"}


def test_a_rule_deleted_by_hand_is_found_and_put_back(lab, applied):
    listing = lab.box.sh("nft -a list chain inet opskit forward")
    handle = next(line.rsplit("# handle ", 1)[1] for line in listing.splitlines() if "proto-dst 80 accept" in line)
    lab.box.sh(f"nft delete rule inet opskit forward handle {handle}")
    assert lab.reach(WEB_PORT) == {WEB_PORT: "timeout"}  # the rule mattered
    plan = lab.apply()
    assert plan.changes == (("the loaded table inet opskit differs from /etc/nftables.conf: chain forward differs "
                             "(5 rules loaded, 6 in the file)"),)
    assert lab.reach(WEB_PORT) == {WEB_PORT: "http"}


def test_without_our_forward_chain_the_published_port_is_open_and_a_plan_closes_it(lab, applied):
    lab.box.sh("nft flush chain inet opskit forward && nft delete chain inet opskit forward")
    assert lab.reach(BLOCKED) == {BLOCKED: "http"}  # the forward chain is what holds Docker's ports
    plan = lab.apply()
    assert plan.changes == (("the loaded table inet opskit differs from /etc/nftables.conf: chain forward missing "
                             "(0 rules loaded, 6 in the file)"),)
    assert lab.reach(BLOCKED, WEB_PORT) == {BLOCKED: "timeout", WEB_PORT: "http"}


def test_a_reboot_loads_the_ruleset(lab, applied, capsys):
    started = time.monotonic()
    docker("restart", lab.box.name)
    lab.box.wait_booted()
    lab.wait_served()
    timed("reboot (docker restart of the box), containers back", started)
    fw = lab.fact()
    assert (fw.enabled, fw.active) == ("enabled", "active") and fw.table("inet", "opskit").input_policy == "drop"
    assert lab.plan() == item.ItemPlan("firewall")
    assert lab.reach(BLOCKED, WEB_PORT, 22) == {BLOCKED: "timeout", WEB_PORT: "http", 22: "ssh"}
    with capsys.disabled():
        print("\n" + "\n".join(f"[firewall] {name}: {s:.1f}s" for name, s in TIMES.items()))
