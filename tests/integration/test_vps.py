"""The simulated VPS for real: up from nothing as a fresh cloud box (systemd, sshd, root with its
key, nothing else), SSH with the pinned host key only, keys only, the same identity after a
reboot, and a down that leaves nothing behind. What provisioning makes of it: tests/e2e.

Runs on its own container names and ports (never a developer's `opskit-vps` on 2222)."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace

import paramiko
import pytest

from opskit.errors import ConnectionFailed, VpsError
from opskit.provision.item import PROVISIONED
from opskit.sim import vps
from opskit.sim.vps_config import HOST_KEY, VpsConfig
from opskit.ssh import Connection

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]


def docker(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> VpsConfig:
    return VpsConfig(container="opskit-vps-test", ssh_port=22222, http_port=28080, https_port=28443,
                         state_dir=tmp_path_factory.mktemp("vps-state"))


@pytest.fixture(scope="module")
def report(config):
    """`vps.up` from nothing (kit images built), timed; removed again after the module."""
    vps.down(config)  # what a crashed earlier run may have left
    result = vps.up(config)
    yield result
    vps.down(config)


@pytest.fixture
def connection(config, report):
    with Connection(config.target(bare=True)) as conn:
        yield conn


def test_up_from_nothing_is_a_fresh_cloud_box_that_lets_root_in(config, report, connection, capsys):
    assert connection.run(["id", "-un"]).stdout.decode().strip() == "root"
    assert connection.run(["ps", "-o", "comm=", "-p", "1"]).stdout.decode().strip() == "systemd"
    state = connection.run(["systemctl", "is-system-running", "--wait"], timeout=60).stdout.decode().strip()
    assert state == "running", connection.run(["systemctl", "--failed", "--no-legend"]).output
    for missing in ("docker", "sudo", "nft"):
        assert connection.run(["sh", "-c", f"command -v {missing}"]).returncode != 0, missing
    assert connection.run(["id", "deploy"]).returncode != 0
    assert connection.run(["python3", "--version"]).returncode == 0
    release = connection.run(["cat", "/etc/os-release"]).stdout.decode()
    assert 'VERSION_ID="12"' in release and "bookworm" in release
    assert not vps.status(config).provisioned
    with capsys.disabled():
        print(f"\n[vps] up from nothing: {report.seconds:.1f}s, first SSH command at {report.ssh_seconds:.1f}s")


def test_the_box_never_tunes_this_machines_kernel(config, report, connection):
    # it shares this machine's kernel: its boot must not apply sysctl.d to it
    assert connection.run(["systemctl", "is-enabled", "systemd-sysctl.service"]).stdout.decode().strip() == "masked"


def test_the_pinned_host_key_is_the_one_the_container_holds(config, report):
    host_key = docker("exec", config.container, "cat", HOST_KEY).stdout.split()
    assert config.known_hosts.read_text() == f"[127.0.0.1]:22222 {host_key[0]} {host_key[1]}\n"
    assert config.key_file.stat().st_mode & 0o777 == 0o600


def test_every_port_is_published_on_loopback_only(config, report):
    bindings = json.loads(docker("container", "inspect", config.container).stdout)[0]["HostConfig"]["PortBindings"]
    assert {port: [b["HostIp"] for b in binds] for port, binds in bindings.items()} == {
        "22/tcp": ["127.0.0.1"], "80/tcp": ["127.0.0.1"], "443/tcp": ["127.0.0.1"], "443/udp": ["127.0.0.1"]}


def test_a_wrong_host_key_in_known_hosts_is_refused(config, report, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    impostor = (tmp_path / "impostor.pub").read_text().split()
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:22222 {impostor[0]} {impostor[1]}\n")
    with pytest.raises(ConnectionFailed, match="does not match"):
        Connection(replace(config.target(bare=True), known_hosts=wrong)).open()


def test_an_unpinned_host_is_refused(config, report, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(ConnectionFailed, match="not pinned"):
        Connection(replace(config.target(bare=True), known_hosts=empty)).open()


def test_password_and_keyboard_interactive_logins_are_refused(config, report):
    transport = paramiko.Transport(("127.0.0.1", config.ssh_port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("root", "any password")
        assert refused.value.allowed_types == ["publickey"]
    finally:
        transport.close()
    effective = docker("exec", config.container, "sshd", "-T").stdout
    for line in ("passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin without-password"):
        assert line in effective.splitlines()


def test_up_again_only_checks_and_is_quick(config, report):
    before = docker("container", "inspect", "--format", "{{.Id}}", config.container).stdout
    pinned = config.known_hosts.read_text()
    started = time.monotonic()
    vps.up(config)
    assert time.monotonic() - started < 15
    assert docker("container", "inspect", "--format", "{{.Id}}", config.container).stdout == before
    assert config.known_hosts.read_text() == pinned


def test_a_stopped_vps_boots_again_with_the_same_identity(config, report):
    pinned = config.known_hosts.read_text()
    assert docker("stop", config.container).returncode == 0  # systemd shuts down (STOPSIGNAL)
    assert vps.status(config).state == "exited"
    vps.up(config)
    assert config.known_hosts.read_text() == pinned
    with Connection(config.target(bare=True)) as conn:
        assert conn.run(["id", "-un"]).stdout.decode().strip() == "root"


def test_a_stopped_vps_made_for_another_key_is_refused_and_left_stopped(config, report, tmp_path):
    # what `invoke provision` leaves, then the box stopped (a reboot of this machine)
    assert docker("exec", config.container, "sh", "-c", f"mkdir -p {PROVISIONED.rsplit('/', 1)[0]} && "
                  f"echo deploy > {PROVISIONED}").returncode == 0
    assert docker("stop", config.container).returncode == 0
    other = replace(config, state_dir=tmp_path / "other-checkout")
    assert vps.gather(other).provisioned == "deploy\n"
    with pytest.raises(VpsError, match="provisioned for another key.*`invoke vps.down`"):
        vps.up(other)
    assert vps.status(config).state == "exited"
    assert docker("exec", config.container, "true").returncode != 0  # not started behind the refusal


def test_down_removes_container_volume_and_pin_and_keeps_the_key(config, report):
    vps.down(config)
    assert docker("container", "inspect", config.container).returncode != 0
    assert docker("volume", "inspect", config.volume).returncode != 0
    assert "22222" not in config.known_hosts.read_text()
    assert config.key_file.exists() and config.public_key_file.exists()
    assert vps.status(config).state == "absent"
