"""The sshd item's plan (pure, from parsed facts), the `sshd -T` fact's parser, and its shell
steps run here against a stand-in `sshd` that accepts or refuses what it reads."""

from __future__ import annotations

import base64
import dataclasses
import grp
import hashlib
import hmac
import os
import pwd
import subprocess
from pathlib import Path

import paramiko
import pytest

from opskit.errors import ProvisionRefused
from opskit.facts import base
from opskit.facts import sshd as sshd_facts
from opskit.facts.files import FileState
from opskit.provision import distros, guard, item, sshd

from .fakes import fake_programs

# `sshd -T` of a fresh VPS (Debian 12, openssh-server 1:9.2p1-2+deb12u10, the cloud image's
# 50-cloud-init.conf only): the lines the item compares, and a few it leaves alone.
FRESH = """\
port 22
listenaddress [::]:22
listenaddress 0.0.0.0:22
usepam yes
logingracetime 120
maxauthtries 6
permitrootlogin without-password
pubkeyauthentication yes
passwordauthentication no
kbdinteractiveauthentication no
x11forwarding yes
permitemptypasswords no
gatewayports no
allowtcpforwarding yes
allowagentforwarding yes
allowstreamlocalforwarding yes
ciphers chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com
macs umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,\
hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1
kexalgorithms sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,\
ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,\
diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256
hostkeyalgorithms ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,\
ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,\
sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,\
ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,\
sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256
pubkeyacceptedalgorithms ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,\
ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,\
sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,\
ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,sk-ssh-ed25519@openssh.com,\
sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,rsa-sha2-256
hostkey /etc/ssh/ssh_host_rsa_key
hostkey /etc/ssh/ssh_host_ecdsa_key
hostkey /etc/ssh/ssh_host_ed25519_key
acceptenv LANG
acceptenv LC_*
authenticationmethods any
subsystem sftp /usr/lib/openssh/sftp-server
permittunnel no
permitopen any
permitlisten any
"""

# the same VPS once the drop-in is in force (`sshd -T`, the same lines)
HARDENED = """\
port 22
listenaddress [::]:22
listenaddress 0.0.0.0:22
usepam yes
logingracetime 30
maxauthtries 3
permitrootlogin no
pubkeyauthentication yes
passwordauthentication no
kbdinteractiveauthentication no
x11forwarding no
permitemptypasswords no
gatewayports no
allowtcpforwarding local
allowagentforwarding no
allowstreamlocalforwarding no
ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr
macs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com
kexalgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,\
diffie-hellman-group16-sha512
hostkeyalgorithms ssh-ed25519
pubkeyacceptedalgorithms ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,sk-ssh-ed25519@openssh.com,\
sk-ssh-ed25519-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256,\
rsa-sha2-256-cert-v01@openssh.com
hostkey /etc/ssh/ssh_host_ed25519_key
allowusers deploy
acceptenv LANG
acceptenv LC_*
authenticationmethods publickey
subsystem sftp /usr/lib/openssh/sftp-server
permittunnel no
permitopen 127.0.0.1:5433
permitlisten none
"""

SERVER_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIMxwyx3Bj0ccX8icHltiUigzq7jlWZB+k3WFZc2sIUM3"
OTHER_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIBkLCSV5Zb8ZqzvJ8N3m3Q1R6y3h1cJ0wS2F0qU2mJ6k"
ECDSA_KEY = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBO0zKzKx"


def plan(host, effective_, found, known_hosts=""):
    """The item's plan for a host whose operator pinned `known_hosts` (text)."""
    return sshd.plan(dataclasses.replace(host, known_hosts=known_hosts), effective_, found)


def effective(text: str) -> sshd_facts.Effective:
    return sshd_facts.parse_effective(f"\n=====opskit:effective=====\n{text}")


@pytest.fixture
def host(env):
    return item.Host(env.provision, env, distros.DISTROS["debian-12"])


def pinned(host, key: str = SERVER_KEY, key_type: str = "ssh-ed25519") -> str:
    t = host.env.ssh
    return f"[{t.host}]:{t.port} {key_type} {key}\n"


def files(host, dropin: bytes | None = None, mode: int = 0o644, owner: str = "root") -> dict:
    pub = FileState(sshd.HOST_KEY + ".pub", f"ssh-ed25519 {SERVER_KEY} root@vps\n".encode(), 0o644, "root", "root")
    state = FileState(sshd.PATH, dropin, mode, owner, "root") if dropin is not None else FileState(sshd.PATH, None)
    return {sshd.PATH: state, pub.path: pub}


# -- the drop-in -------------------------------------------------------------------------------------


def test_the_drop_in_sets_every_hardening_from_the_inventory(host):
    lines = sshd.render(host).decode().splitlines()
    for wanted in ["PermitRootLogin no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                   "PermitEmptyPasswords no", "AuthenticationMethods publickey", "X11Forwarding no",
                   "AllowAgentForwarding no", "AllowStreamLocalForwarding no", "PermitTunnel no", "GatewayPorts no",
                   "AllowTcpForwarding local", "PermitOpen 127.0.0.1:5433", "PermitListen none", "MaxAuthTries 3",
                   "LoginGraceTime 30", "AllowUsers deploy", "HostKey /etc/ssh/ssh_host_ed25519_key",
                   "HostKeyAlgorithms ssh-ed25519"]:
        assert wanted in lines
    assert sum(1 for ln in lines if ln.startswith("HostKey ")) == 1


def test_the_drop_in_follows_the_inventory(make_env):
    def edit(raw):
        raw["environments"]["local"].setdefault("provision", {})["ssh"] = {"max_auth_tries": 2}
        raw["environments"]["local"]["ssh"]["user"] = "ops"
    env = make_env("local", edit)
    env = dataclasses.replace(env, postgres=dataclasses.replace(env.postgres, publish_port=6543))
    text = sshd.render(item.Host(env.provision, env, distros.DISTROS["debian-12"])).decode()
    assert "\nMaxAuthTries 2\n" in text and "\nAllowUsers ops\n" in text and "\nPermitOpen 127.0.0.1:6543\n" in text


def test_the_drop_in_is_the_same_bytes_every_time(host):
    assert sshd.render(host) == sshd.render(host)
    assert sshd.wanted(host).mode == 0o644 and sshd.wanted(host).owner == "root"


def test_a_value_that_would_break_the_config_is_refused(host):
    env = dataclasses.replace(host.env, ssh=dataclasses.replace(host.env.ssh, user="deploy\nPermitRootLogin yes"))
    with pytest.raises(ValueError, match="cannot be written into sshd_config"):
        sshd.render(dataclasses.replace(host, env=env))


def _algorithms(host, keyword):
    return dict(sshd.settings(host))[keyword].split(",")


def test_paramiko_can_still_negotiate_every_algorithm_kind(host):
    """opskit's own client (paramiko 4.0, the venv's) must find one of its algorithms in each list."""
    t = paramiko.Transport
    assert set(_algorithms(host, "KexAlgorithms")) & set(t._preferred_kex)
    assert set(_algorithms(host, "Ciphers")) & set(t._preferred_ciphers)
    assert set(_algorithms(host, "MACs")) & set(t._preferred_macs)
    assert set(_algorithms(host, "HostKeyAlgorithms")) & set(t._preferred_keys)
    assert "ssh-ed25519" in _algorithms(host, "PubkeyAcceptedAlgorithms")
    assert {"curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512"} <= set(_algorithms(host, "KexAlgorithms"))


def test_no_algorithm_that_ssh_audit_fails(host):
    every = ",".join(v for k, v in sshd.settings(host) if k.endswith(("Algorithms", "Ciphers", "MACs"))).split(",")
    assert not [a for a in every if "nistp" in a or "sha1" in a or "cbc" in a or a.startswith(("ssh-rsa", "ecdsa"))]
    assert not [a for a in every if "-etm@" not in a and a.startswith(("hmac-", "umac-"))]  # encrypt-and-MAC


# -- the plan ----------------------------------------------------------------------------------------


def test_a_fresh_vps_gets_the_drop_in_under_the_guard(host):
    p = plan(host, effective(FRESH), files(host), pinned(host))
    assert p.item == "sshd" and p.guarded
    assert p.changes[0] == f"{sshd.PATH}: missing"
    for line in ["X11Forwarding yes, wanted no", "MaxAuthTries 6, wanted 3",
                 "PermitRootLogin without-password, wanted no",
                 "AllowUsers (anyone), wanted deploy", "PermitOpen any, wanted 127.0.0.1:5433",
                 "AllowTcpForwarding yes, wanted local", "LoginGraceTime 120, wanted 30",
                 ("HostKey /etc/ssh/ssh_host_rsa_key /etc/ssh/ssh_host_ecdsa_key /etc/ssh/ssh_host_ed25519_key, "
                  "wanted /etc/ssh/ssh_host_ed25519_key")]:
        assert line in p.changes
    kex = next(c for c in p.changes if c.startswith("KexAlgorithms "))
    assert "ecdh-sha2-nistp256" in kex and "(not wanted)" in kex and "curve25519" not in kex
    assert not [c for c in p.changes if c.startswith(("PasswordAuthentication", "PermitTunnel", "GatewayPorts"))]
    assert [s.title.split(" ")[0] for s in p.steps] == ["sshd:", "write", "reload", "check", "sshd:", "sshd:"]
    arm, install, reload, verify, prove, disarm = p.steps
    assert guard.is_arm(arm) and arm.argv[-2:] == ("systemctl reload ssh", sshd.PATH)
    assert install.stdin == sshd.render(host) and install.argv[4:] == (sshd.PATH, "0644", "root", "root")
    assert reload.argv == ("systemctl", "reload", "ssh")
    assert prove == guard.prove("sshd", host.env) and disarm == guard.disarm("sshd")
    assert b"x11forwarding no\n" in verify.stdin and b"hostkey /etc/ssh/ssh_host_ed25519_key\n" in verify.stdin


def test_a_hardened_vps_plans_nothing(host):
    p = plan(host, effective(HARDENED), files(host, sshd.render(host)), "")
    assert (p.changes, p.steps, p.notes) == ((), (), ())


def test_only_the_file_differs_when_sshd_already_agrees(host):
    p = plan(host, effective(HARDENED), files(host, sshd.render(host) + b"# edited\n"), pinned(host))
    assert p.changes == (f"{sshd.PATH}: content differs",) and p.steps


def test_a_wrong_mode_or_owner_is_a_change(host):
    p = plan(host, effective(HARDENED), files(host, sshd.render(host), mode=0o666, owner="deploy"), pinned(host))
    assert f"{sshd.PATH}: mode 0666, wanted 0644" in p.changes
    assert f"{sshd.PATH}: owner deploy:root, wanted root:root" in p.changes


def test_a_setting_another_file_adds_is_a_note_not_an_endless_change(host):
    """AllowUsers and HostKey add up across files: the drop-in cannot take back what another
    file adds, so a second run must not rewrite it forever; it says so instead."""
    text = HARDENED.replace("allowusers deploy\n", "allowusers deploy\nallowusers root\n")
    p = plan(host, effective(text), files(host, sshd.render(host)), "")
    assert not p.steps and p.notes == (
        "sshd -T: AllowUsers deploy root, wanted deploy (another sshd config file sets it; opskit leaves those alone)",)


def test_algorithm_lists_name_what_is_missing_and_the_order(host):
    lacking = HARDENED.replace("macs hmac-sha2-512-etm@openssh.com,", "macs ")
    swapped = HARDENED.replace("aes256-gcm@openssh.com,aes128-gcm@openssh.com",
                               "aes128-gcm@openssh.com,aes256-gcm@openssh.com")
    assert sshd.differences(host, effective(lacking)) == ["MACs lacks hmac-sha2-512-etm@openssh.com (wanted)"]
    [line] = sshd.differences(host, effective(swapped))
    assert line.startswith("Ciphers order chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,")


def test_without_sshd_the_file_is_the_change_and_a_note_says_why(host):
    p = plan(host, sshd_facts.Effective(installed=False), files(host), pinned(host))
    assert p.changes == (f"{sshd.PATH}: missing",) and p.steps
    assert p.notes == ("no sshd on the host: its settings are read once openssh-server is installed",)


def test_when_sshd_t_fails_the_plan_says_so(host):
    broken = sshd_facts.parse_effective("=====opskit:error=====\n/etc/ssh/sshd_config: line 3: Bad configuration "
                                        "option: Bogus\n/etc/ssh/sshd_config: terminating, 1 bad configuration options")
    p = plan(host, broken, files(host), pinned(host))
    assert p.changes == (f"{sshd.PATH}: missing",)
    assert p.notes == (("`sshd -T` fails, so the settings in force are unknown: /etc/ssh/sshd_config: terminating, "
                        "1 bad configuration options"),)


# -- the pinned host key -----------------------------------------------------------------------------


def test_refused_when_known_hosts_pins_only_the_keys_that_go(host):
    with pytest.raises(ProvisionRefused, match=r"pins no ssh-ed25519 key for \[127\.0\.0\.1\]:2222") as refused:
        plan(host, effective(FRESH), files(host), pinned(host, ECDSA_KEY, "ecdsa-sha2-nistp256"))
    assert "would lock this machine out" in str(refused.value) and str(host.env.ssh.known_hosts) in str(refused.value)
    assert refused.value.exit_code == 5


def test_refused_when_the_pinned_ed25519_key_is_another_one(host):
    with pytest.raises(ProvisionRefused, match="pins a different ed25519 key"):
        plan(host, effective(FRESH), files(host), pinned(host, OTHER_KEY))


def test_refused_when_the_host_has_no_ed25519_key(host):
    found = {**files(host), sshd.HOST_KEY + ".pub": FileState(sshd.HOST_KEY + ".pub", None)}
    with pytest.raises(ProvisionRefused, match="has no /etc/ssh/ssh_host_ed25519_key.pub"):
        plan(host, effective(FRESH), found, pinned(host))


def test_no_refusal_when_nothing_changes(host):
    assert not plan(host, effective(HARDENED), files(host, sshd.render(host)), "").steps


def test_known_hosts_as_paramiko_reads_it(host):
    salt = os.urandom(20)
    hashed = "|1|{}|{}".format(base64.b64encode(salt).decode(),
                               base64.b64encode(hmac.new(salt, b"[127.0.0.1]:2222", hashlib.sha1).digest()).decode())
    text = "\n".join([
        "# a comment", "",
        f"@revoked [127.0.0.1]:2222 ssh-ed25519 {OTHER_KEY}",
        f"127.0.0.1 ssh-ed25519 {OTHER_KEY}",  # port 22's entry is another host for paramiko
        f"other,[127.0.0.1]:2222 ecdsa-sha2-nistp256 {ECDSA_KEY}",
        f"{hashed} ssh-ed25519 {SERVER_KEY}",
    ])
    assert sshd.pinned_keys(text, "127.0.0.1", 2222) == {"ecdsa-sha2-nistp256": {ECDSA_KEY},
                                                         "ssh-ed25519": {SERVER_KEY}}
    assert sshd.pinned_keys(text, "127.0.0.1", 22) == {"ssh-ed25519": {OTHER_KEY}}
    assert plan(host, effective(FRESH), files(host), text).steps


# -- the `sshd -T` fact ------------------------------------------------------------------------------


def test_effective_keeps_every_value_of_the_keywords_that_add_up():
    e = effective(FRESH)
    assert e.known and e["X11Forwarding"] == "yes" and e.get("maxauthtries") == "6"
    assert e.get("hostkey") == ("/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ecdsa_key",
                                "/etc/ssh/ssh_host_ed25519_key")
    assert e.get("port") == ("22",) and e.get("listenaddress") == ("[::]:22", "0.0.0.0:22")
    assert e.get("acceptenv") == ("LANG", "LC_*") and e.get("allowusers") == () and "allowusers" not in e
    assert e.get("subsystem") == ("sftp /usr/lib/openssh/sftp-server",)
    assert effective("somethingnew a\nsomethingnew b\n").get("somethingnew") == ("a", "b")


def test_effective_absent_error_and_nonsense():
    assert sshd_facts.parse_effective("\n=====opskit:absent=====\n") == sshd_facts.Effective(installed=False)
    err = sshd_facts.parse_effective("\n=====opskit:error=====\nsshd: no hostkeys available -- exiting.\n")
    assert err.installed and not err.known and err.error == "sshd: no hostkeys available -- exiting."
    with pytest.raises(ValueError):
        sshd_facts.parse_effective("sshd: command not found")
    with pytest.raises(ValueError):
        sshd_facts.parse_effective("=====opskit:effective=====\n")


# -- the shell steps, against a stand-in sshd ----------------------------------------------------------

# -t refuses a config with a `Bogus` keyword in the drop-in, as sshd does; -T prints $SSHD_T
FAKE_SSHD = """#!/bin/sh
case "$1" in
-t) if grep -q '^Bogus' "$DROPIN" 2>/dev/null; then
        echo "$DROPIN: line 1: Bad configuration option: Bogus" >&2
        echo "$DROPIN: terminating, 1 bad configuration options" >&2; exit 255; fi ;;
-T) if [ -n "${SSHD_T_FAILS:-}" ]; then echo "sshd: no hostkeys available -- exiting." >&2; exit 1; fi
    cat "$SSHD_T" ;;
esac
"""


@pytest.fixture
def fake(tmp_path):
    path = fake_programs(tmp_path / "bin", sshd=FAKE_SSHD)
    conf = tmp_path / "sshd_config.d"
    conf.mkdir()
    (tmp_path / "T").write_text(HARDENED)
    return {"PATH": path, "DROPIN": str(conf / "00-opskit.conf"),
            "SSHD_T": str(tmp_path / "T")}


def _run(step, environ, stdin=None):
    done = subprocess.run(list(step.argv), input=stdin if stdin is not None else step.stdin, capture_output=True,
                          env={**os.environ, **environ}, check=False)
    return done.returncode, done.stderr.decode()


def _install(fake, content: bytes):
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    return sshd.install(item.Wanted(fake["DROPIN"], content, 0o640, me, group))


def test_install_keeps_a_file_sshd_accepts(fake):
    code, err = _run(_install(fake, b"X11Forwarding no\n"), fake)
    path = fake["DROPIN"]
    assert code == 0, err
    assert Path(path).read_bytes() == b"X11Forwarding no\n" and os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(os.path.dirname(path)) == ["00-opskit.conf"]


def test_install_puts_the_old_file_back_when_sshd_refuses_the_new(fake):
    path = fake["DROPIN"]
    with open(path, "wb") as fh:
        fh.write(b"X11Forwarding no\n")
    os.chmod(path, 0o644)
    code, err = _run(_install(fake, b"Bogus yes\n"), fake)
    assert code == 1
    assert "the previous one is back" in err and "Bad configuration option: Bogus" in err
    assert Path(path).read_bytes() == b"X11Forwarding no\n" and os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(os.path.dirname(path)) == ["00-opskit.conf"]


def test_install_leaves_no_file_when_there_was_none_and_sshd_refuses(fake):
    code, err = _run(_install(fake, b"Bogus yes\n"), fake)
    assert code == 1 and "Bogus" in err
    assert os.listdir(os.path.dirname(fake["DROPIN"])) == []


def test_verify_passes_when_sshd_shows_every_setting(host, fake):
    code, err = _run(sshd.verify(host), fake)
    assert code == 0, err


def test_verify_names_each_setting_sshd_does_not_show(host, fake):
    with open(fake["SSHD_T"], "w") as fh:
        fh.write(HARDENED.replace("x11forwarding no", "x11forwarding yes").replace("maxauthtries 3", "maxauthtries 6"))
    code, err = _run(sshd.verify(host), fake)
    assert code == 1 and "sshd -T does not show what the drop-in sets:\n  maxauthtries 3\n  x11forwarding no" in err


def test_the_fact_script_reads_sshd_t_or_says_why_not(fake):
    fact = sshd_facts.effective()
    done = subprocess.run(list(fact.argv), capture_output=True, text=True, env={**os.environ, **fake}, check=False)
    assert done.returncode == 0 and fact.parse(base.Output(done.stdout)) == effective(HARDENED)
    failing = {**os.environ, **fake, "SSHD_T_FAILS": "1"}
    done = subprocess.run(list(fact.argv), capture_output=True, text=True, env=failing, check=False)
    assert done.returncode == 0
    assert fact.parse(base.Output(done.stdout)).error == "sshd: no hostkeys available -- exiting."


# -- the deploy keys ---------------------------------------------------------------------------------


def test_refused_when_a_deploy_key_is_of_a_kind_the_drop_in_refuses(host):
    keys = (f"ssh-ed25519 {SERVER_KEY} ops@laptop", f"ecdsa-sha2-nistp256 {ECDSA_KEY} ci@runner")
    with pytest.raises(ProvisionRefused, match=r"keys include ecdsa-sha2-nistp256 \(ci@runner\): make an ed25519"):
        plan(dataclasses.replace(host, deploy_keys=keys), effective(FRESH), files(host), pinned(host))


def test_ed25519_and_rsa_deploy_keys_are_accepted(host):
    keys = (f"ssh-ed25519 {SERVER_KEY} ops@laptop", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ ci@runner",
            f"sk-ssh-ed25519@openssh.com {SERVER_KEY}")
    assert plan(dataclasses.replace(host, deploy_keys=keys), effective(FRESH), files(host), pinned(host)).steps


def test_a_registry_on_the_servers_loopback_may_be_tunnelled_to_and_nothing_else(host):
    def text(registry):
        there = dataclasses.replace(host, env=dataclasses.replace(host.env, registry=registry))
        return sshd.render(there).decode()
    assert "\nPermitOpen 127.0.0.1:5433 127.0.0.1:5000\n" in text("127.0.0.1:5000/jobagent")
    assert "\nPermitOpen 127.0.0.1:5433\n" in text("registry.example.com/team")
    assert "\nPermitOpen 127.0.0.1:5433\n" in text("10.0.0.5:5000/team")
    assert "\nPermitOpen 127.0.0.1:5433\n" in text(None)
