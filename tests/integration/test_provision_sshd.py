"""The sshd item for real, on a scratch VPS box: the drop-in applied through the runner (the guard's
proof is a NEW local SSH login as the deploy user), `sshd -T` showing every setting, a second plan
with no change, a refused drop-in that leaves the old one, a failed proof reverted (now, and by the
armed timer on its own), ssh-audit with no "fail", and paramiko and OpenSSH still logging in.

The box publishes its port 22 on 127.0.0.1 only. The deploy user (with a key and sudo) is made here
by hand: in the product the accounts item makes it."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import time

import paramiko
import pytest

from opskit import ROOT, inventory
from opskit.errors import ConnectionFailed, StepFailed
from opskit.facts import base
from opskit.facts import sshd as sshd_facts
from opskit.inventory.model import Target
from opskit.provision import distros, guard, item, sshd
from opskit.runner import Runner
from opskit.ssh import Connection, system_ssh_argv
from opskit.steps import Plan
from tests.integration.box import Box

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

SETUP = r"""
set -eu
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sudo >/dev/null
useradd -m -s /bin/bash deploy
install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh
cat > /home/deploy/.ssh/authorized_keys
chown deploy:deploy /home/deploy/.ssh/authorized_keys
chmod 0600 /home/deploy/.ssh/authorized_keys
echo 'deploy ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/deploy
chmod 0440 /etc/sudoers.d/deploy
"""


def say(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n[sshd] {text}")


@pytest.fixture(scope="module")
def box():
    with Box(publish=("127.0.0.1::22",)) as b:
        yield b


@pytest.fixture(scope="module")
def port(box) -> int:
    out = subprocess.run(["docker", "port", box.name, "22/tcp"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def host(box, port, tmp_path_factory) -> item.Host:
    """The deploy user made by hand, this box's ed25519 key pinned, the `local` inventory aimed at it."""
    keys = tmp_path_factory.mktemp("sshd-keys")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy@test", "-f", str(keys / "id")],
                   check=True)
    done = box.run(["sh", "-c", SETUP], stdin=(keys / "id.pub").read_bytes())
    assert done.returncode == 0, done.output[-800:]
    key = box.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").split()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {key[0]} {key[1]}\n")
    env = inventory.load("local", path=ROOT / "inventory.yaml", with_secrets=False)
    env = dataclasses.replace(env, ssh=Target("127.0.0.1", port, "deploy", keys / "id", keys / "known_hosts"))
    return item.Host(env.provision, env, distros.DISTROS["debian-12"], known_hosts=(keys / "known_hosts").read_text())


def plan_now(box, host) -> item.ItemPlan:
    """The item's plan from facts read on the box right now."""
    return sshd.plan(host, *base.read(box, *sshd.facts(host)))


def effective(box) -> sshd_facts.Effective:
    return base.read(box, sshd_facts.effective())


def dropin(box) -> bytes | None:
    done = box.run(["cat", sshd.PATH])
    return done.stdout if done.returncode == 0 else None


def logs_in(host) -> str:
    with Connection(host.env.ssh, timeout=10) as conn:
        return conn.run(["sudo", "-n", "id", "-un"], timeout=30).stdout.decode().strip()


def with_user(host, user: str) -> item.Host:
    ssh = dataclasses.replace(host.env.ssh, user=user)
    return dataclasses.replace(host, env=dataclasses.replace(host.env, ssh=ssh))


@pytest.fixture(scope="module")
def hardened(box, host):
    """The item applied once, from the fresh box; how long that took."""
    before = plan_now(box, host)
    started = time.monotonic()
    Runner(box).run(Plan("provision.sshd", list(before.steps)))
    return before, time.monotonic() - started


# -- the item applied ------------------------------------------------------------------------------


def test_the_fresh_box_shows_what_the_item_changes(box, host):
    p = plan_now(box, host)
    assert p.guarded and p.changes[0] == f"{sshd.PATH}: missing"
    assert {"X11Forwarding yes, wanted no", "MaxAuthTries 6, wanted 3", "AllowUsers (anyone), wanted deploy",
            "PermitRootLogin without-password, wanted no"} <= set(p.changes)


def test_sshd_shows_every_setting_of_the_drop_in(box, host, hardened, capsys):
    before, seconds = hardened
    e = effective(box)
    for keyword, value in sshd.settings(host):
        shown = e.get(keyword)
        assert shown == ((value,) if keyword.lower() in sshd_facts.MULTI_VALUED else value), keyword
    assert e.get("hostkey") == ("/etc/ssh/ssh_host_ed25519_key",) and e.get("allowusers") == ("deploy",)
    assert e["permitopen"] == "127.0.0.1:5433" and e["maxauthtries"] == "3" and e["x11forwarding"] == "no"
    assert dropin(box) == sshd.render(host)
    assert box.sh(f"stat -c '%a %U %G' {sshd.PATH}").strip() == "644 root root"
    say(capsys, f"fresh box: {len(before.changes)} changes, applied in {seconds:.1f}s (arm, write + sshd -t, "
                f"reload, sshd -T check, new login as deploy, disarm)")


def test_the_revert_was_disarmed(box, hardened):
    assert box.run(["systemctl", "is-active", "opskit-revert-sshd.timer"]).stdout.decode().strip() != "active"
    assert box.run(["test", "-e", f"{item.STATE_DIR}/revert/sshd"]).returncode != 0


def test_a_second_plan_from_fresh_facts_changes_nothing(box, host, hardened, capsys):
    started = time.monotonic()
    again = plan_now(box, host)
    assert (again.changes, again.steps, again.notes) == ((), (), ())
    say(capsys, f"second plan: no change ({time.monotonic() - started:.1f}s to read the facts and plan)")


# -- who gets in, and how ----------------------------------------------------------------------------


def test_paramiko_logs_in_as_the_deploy_user_with_sudo(host, hardened, caplog, capsys):
    assert logs_in(host) == "root"
    with caplog.at_level(logging.DEBUG, logger="paramiko.transport"), Connection(host.env.ssh) as conn:
        t = conn.client.get_transport()
        agreed = dict(r.getMessage().split(": ", 1) for r in caplog.records
                      if r.getMessage().startswith(("Kex: ", "HostKey: ", "Cipher: ", "MAC: ")))
    assert agreed["Kex"] == "curve25519-sha256@libssh.org" and agreed["HostKey"] == "ssh-ed25519"
    assert t.host_key_type == "ssh-ed25519"
    say(capsys, f"paramiko {paramiko.__version__}: " + ", ".join(f"{k} {v}" for k, v in agreed.items()))


def test_openssh_logs_in_with_the_pinned_host_key(host, hardened, capsys):
    done = subprocess.run(system_ssh_argv(host.env.ssh, "-v", "-o", "ConnectTimeout=10") + ["sudo", "-n", "id", "-un"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip() == "root"
    kex = [ln.split("kex: algorithm: ")[1] for ln in done.stderr.splitlines() if "kex: algorithm: " in ln]
    assert kex == ["sntrup761x25519-sha512@openssh.com"]
    say(capsys, f"OpenSSH client: kex {kex[0]}")


def test_root_may_no_longer_log_in(host, hardened):
    with pytest.raises(ConnectionFailed):
        logs_in(with_user(host, "root"))


def test_a_client_that_pinned_only_the_rsa_key_is_locked_out(box, host, hardened, tmp_path):
    """Why the item refuses to run while known_hosts pins no ed25519 key."""
    rsa = box.sh("cat /etc/ssh/ssh_host_rsa_key.pub").split()
    only_rsa = tmp_path / "known_hosts"
    only_rsa.write_text(f"[127.0.0.1]:{host.env.ssh.port} {rsa[0]} {rsa[1]}\n")
    with pytest.raises(ConnectionFailed, match="host key does not match"):
        Connection(dataclasses.replace(host.env.ssh, known_hosts=only_rsa), timeout=10).open()


def test_only_the_db_tunnel_may_be_forwarded(box, host, hardened):
    publish = host.env.postgres
    serve = f"python3 -m http.server {publish.publish_port} --bind {publish.publish_host}"
    box.run(["sh", "-c", f"nohup {serve} >/dev/null 2>&1 &"])
    with Connection(host.env.ssh) as conn:
        t = conn.client.get_transport()
        for _ in range(50):  # the stand-in for Postgres takes a moment to listen
            try:
                chan = t.open_channel("direct-tcpip", (publish.publish_host, publish.publish_port), ("127.0.0.1", 0))
                break
            except paramiko.ChannelException:
                time.sleep(0.1)
        else:
            pytest.fail("the forward to the published Postgres port was refused")
        chan.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert chan.recv(12).startswith(b"HTTP/1.0 200")
        chan.close()
        with pytest.raises(paramiko.ChannelException):
            t.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
        with pytest.raises(paramiko.SSHException):
            t.request_port_forward("127.0.0.1", 0)
    box.run(["pkill", "-f", serve])


def test_ssh_audit_finds_nothing_that_fails(port, hardened, capsys):
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ssh_audit", "-j", "-p", str(port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=120, check=False)
    seconds = time.monotonic() - started
    assert done.returncode in (0, 2), done.stdout[-800:] + done.stderr[-800:]  # 2: warnings, 3: failures
    report = json.loads(done.stdout)
    fails, warns = [], []
    for kind in ("kex", "key", "enc", "mac"):
        for alg in report.get(kind, []):
            notes = alg.get("notes", {})
            fails += [f"{alg['algorithm']}: {n}" for n in notes.get("fail", [])]
            warns += [f"{alg['algorithm']}: {n}" for n in notes.get("warn", [])]
    assert fails == [] and report["cves"] == [] and "critical" not in report["recommendations"]
    assert [a["algorithm"] for a in report["key"]] == ["ssh-ed25519"]
    dheat = [n for n in report["additional_notes"] if "DHEat" in n]
    say(capsys, f"ssh-audit ({seconds:.1f}s): 0 fail, {len(warns)} warn: {'; '.join(warns)}")
    say(capsys, "ssh-audit's rate test: " + (dheat[0][:160] + "..." if dheat else "no DHEat note"))


# -- refusals and reverts --------------------------------------------------------------------------


def test_a_drop_in_sshd_refuses_leaves_the_old_one_and_sshd_running(box, host, hardened):
    broken = dataclasses.replace(sshd.wanted(host), content=sshd.render(host) + b"Bogus yes\n")
    with pytest.raises(StepFailed) as failed:
        Runner(box).run(Plan("broken", [sshd.install(broken)]))
    assert "Bad configuration option: Bogus" in str(failed.value) and "the previous one is back" in str(failed.value)
    assert dropin(box) == sshd.render(host)
    assert box.sh("ls -A /etc/ssh/sshd_config.d").split() == ["00-opskit.conf", "50-cloud-init.conf"]
    assert box.run(["systemctl", "is-active", "ssh"]).stdout.decode().strip() == "active"
    assert box.run(["sshd", "-t"]).returncode == 0
    assert logs_in(host) == "root"


def _failing_proof(box, host, seconds: int = guard.REVERT_AFTER_S) -> list:
    """The item's steps for a deploy user that does not exist: the change goes in, the proof fails."""
    wrong = with_user(host, "nobody-here")
    steps = list(plan_now(box, wrong).steps)
    assert guard.is_arm(steps[0])
    steps[0] = guard.arm("sshd", [sshd.PATH], f"systemctl reload {host.distro.ssh_service}", seconds=seconds)
    with pytest.raises(StepFailed, match="a new login as nobody-here fails"):
        Runner(box).run(Plan("provision.sshd", steps))
    assert effective(box).get("allowusers") == ("nobody-here",)  # the change is in force: deploy is locked out
    return steps


def test_a_failed_proof_is_reverted_now(box, host, hardened):
    _failing_proof(box, host)
    Runner(box).run(Plan("revert", [guard.revert_now("sshd")]))
    assert dropin(box) == sshd.render(host)
    assert effective(box).get("allowusers") == ("deploy",)
    assert box.run(["systemctl", "is-active", "opskit-revert-sshd.timer"]).stdout.decode().strip() != "active"
    assert logs_in(host) == "root"


def test_an_armed_revert_restores_by_itself_when_nobody_disarms_it(box, host, hardened, capsys):
    started = time.monotonic()
    _failing_proof(box, host, seconds=10)
    deadline = started + 60
    while dropin(box) != sshd.render(host) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert dropin(box) == sshd.render(host), "the armed timer did not put the drop-in back"
    for _ in range(20):  # the timer's restore runs `systemctl reload ssh` after the copy
        if effective(box).get("allowusers") == ("deploy",):
            break
        time.sleep(0.5)
    assert logs_in(host) == "root"
    assert plan_now(box, host).steps == ()
    say(capsys, f"armed revert (10s) restored the drop-in by itself {time.monotonic() - started:.1f}s after arming")


def test_the_fact_says_absent_when_there_is_no_sshd(box, hardened):
    box.sh("mv /usr/sbin/sshd /usr/sbin/sshd.away")
    try:
        assert effective(box) == sshd_facts.Effective(installed=False)
    finally:
        box.sh("mv /usr/sbin/sshd.away /usr/sbin/sshd")
    assert effective(box).known
