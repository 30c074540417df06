"""sshd hardening: one drop-in, /etc/ssh/sshd_config.d/00-opskit.conf, checked with `sshd -t` before
it counts, then `systemctl reload ssh`, all under the guard (a NEW login as the deploy user must
work, or the old file is put back).

sshd takes the first value it reads for most keywords, and Debian's and Ubuntu's sshd_config
include sshd_config.d/*.conf at their top: a file named 00- wins over the cloud image's
50-cloud-init.conf and over sshd_config itself. The plan compares what `sshd -T` says is in force
with what the drop-in sets, so the changes read "X11Forwarding yes, wanted no".

Will not change: sshd_config and the other drop-ins (keywords that add up across files instead of
taking the first value, HostKey and AllowUsers, can still be widened there: the plan says so in its
notes), the port sshd listens on, and the host key files (RSA and ECDSA stay on disk; sshd stops
offering them).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from ..errors import ProvisionRefused
from ..facts import files as file_facts
from ..facts import sshd as sshd_facts
from ..steps import SERVER, Run
from . import guard
from .item import ItemPlan, Wanted

NAME = "sshd"
TITLE = "sshd hardening"

PATH = "/etc/ssh/sshd_config.d/00-opskit.conf"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
HOST_KEY_TYPE = "ssh-ed25519"

# Each list holds what paramiko 4.0 (opskit's own client) speaks: curve25519-sha256@libssh.org and
# diffie-hellman-group16-sha512, aes*-ctr and aes*-gcm, hmac-sha2-*-etm. OpenSSH clients (9.2 on
# Debian 12) get the post-quantum hybrid sntrup761 and chacha20-poly1305 first. Left out: the NIST
# curves and SHA-1 (ssh-audit "fail"), group14 and group-exchange (2048-bit moduli), the
# encrypt-and-MAC MACs and 64-bit tags. `sntrup761x25519-sha512@openssh.com`, not its newer
# unsuffixed name: OpenSSH knows that one only from 9.9 (Ubuntu 24.04 has 9.6).
KEX = ("sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
       "diffie-hellman-group16-sha512")
CIPHERS = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr",
           "aes192-ctr", "aes128-ctr")
MACS = ("hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com")
HOST_KEY_ALGORITHMS = (HOST_KEY_TYPE,)
# the users' keys: ed25519 (also on a security key) and RSA with SHA-2 signatures, with certificates
PUBKEY_ALGORITHMS = ("ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com", "sk-ssh-ed25519@openssh.com",
                     "sk-ssh-ed25519-cert-v01@openssh.com", "rsa-sha2-512", "rsa-sha2-512-cert-v01@openssh.com",
                     "rsa-sha2-256", "rsa-sha2-256-cert-v01@openssh.com")
#: keywords whose value is a comma-separated list of algorithms (the changes name what differs)
_ALGORITHM_LISTS = {"kexalgorithms", "ciphers", "macs", "hostkeyalgorithms", "pubkeyacceptedalgorithms"}

_HEADER = """\
# Written by opskit (`invoke provision`, item "sshd"): the next run puts back any change made here.
# sshd takes the first value it reads, and sshd_config includes sshd_config.d/*.conf at its top:
# this file (00-) comes before the cloud image's 50-cloud-init.conf and sshd_config itself.
"""


LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def tunnels(host) -> tuple:
    """`host:port` the deploy user may forward to: Postgres on the server's loopback (`invoke
    db.tunnel`), and a registry the inventory names on the server's loopback, which a push from
    here reaches through a tunnel (`registry: 127.0.0.1:5000/team`)."""
    out = [host.env.postgres.publish]
    address = (host.env.registry or "").split("/", 1)[0]
    if ":" in address and address.rsplit(":", 1)[0] in LOOPBACK:
        out.append(address)
    return tuple(dict.fromkeys(out))


def groups(host) -> tuple:
    """The drop-in as (why, ((Keyword, value), ...)) groups, in order. `sshd -T` prints each
    setting back as `keyword value`, the keyword in lower case."""
    user, tunnel = host.env.ssh.user, " ".join(tunnels(host))
    for what, value in (("the deploy user", user), *(("a tunnel's end", t) for t in tunnels(host))):
        if not re.fullmatch(r"[^\s#\"\\]+", value):
            raise ValueError(f"{what} {value!r} cannot be written into sshd_config")
    return (
        ("Who may log in, and how: the deploy user, with a key, nothing else.",
         (("AllowUsers", user), ("PermitRootLogin", "no"), ("PubkeyAuthentication", "yes"),
          ("AuthenticationMethods", "publickey"), ("PasswordAuthentication", "no"),
          ("KbdInteractiveAuthentication", "no"), ("PermitEmptyPasswords", "no"),
          ("MaxAuthTries", str(host.settings.ssh_max_auth_tries)), ("LoginGraceTime", "30"))),
        ("No forwarding but the local ones to the server's loopback: Postgres (`invoke db.tunnel`), a registry.",
         (("X11Forwarding", "no"), ("AllowAgentForwarding", "no"), ("AllowStreamLocalForwarding", "no"),
          ("PermitTunnel", "no"), ("GatewayPorts", "no"), ("AllowTcpForwarding", "local"),
          ("PermitOpen", tunnel), ("PermitListen", "none"))),
        ("One host key (ed25519), modern algorithms only (opskit/provision/sshd.py says why these).",
         (("HostKey", HOST_KEY), ("HostKeyAlgorithms", ",".join(HOST_KEY_ALGORITHMS)), ("KexAlgorithms", ",".join(KEX)),
          ("Ciphers", ",".join(CIPHERS)), ("MACs", ",".join(MACS)),
          ("PubkeyAcceptedAlgorithms", ",".join(PUBKEY_ALGORITHMS)))),
    )


def settings(host) -> tuple:
    """((Keyword, value), ...) as the drop-in sets them."""
    return tuple(pair for _, pairs in groups(host) for pair in pairs)


def render(host) -> bytes:
    parts = [_HEADER]
    for why, pairs in groups(host):
        parts.append(f"\n# {why}\n" + "".join(f"{key} {value}\n" for key, value in pairs))
    return "".join(parts).encode()


def wanted(host) -> Wanted:
    return Wanted(PATH, render(host), 0o644)


# -- the item --------------------------------------------------------------------------------------


def packages(host) -> tuple:
    return ("openssh-server",)


def facts(host) -> tuple:
    """What sshd says is in force (`sshd -T`), the drop-in as it is, and the ed25519 host key's
    public half (the one key left: the operator's known_hosts must pin it)."""
    return (sshd_facts.effective(), file_facts.files(PATH, HOST_KEY + ".pub", name="sshd_dropin"))


def plan(host, effective: sshd_facts.Effective, found: dict) -> ItemPlan:
    """Write the drop-in when it differs, validated, reloaded and proven under the guard.

    `effective`: the `sshd -T` fact; `found`: {path: FileState} of the drop-in and the host key's
    public half. `host.known_hosts` is the operator's pinned keys (text). Raises ProvisionRefused when the change would leave only a host key that known_hosts does not
    pin, or refuse a deploy key (ECDSA)."""
    want = wanted(host)
    file_changes = want.differences(found.get(PATH))
    drift = differences(host, effective)
    notes = list(_unknown(effective))
    if not file_changes:
        notes += [f"sshd -T: {d} (another sshd config file sets it; opskit leaves those alone)" for d in drift]
        return ItemPlan(NAME, notes=notes)
    refuse_unpinned(host, host.known_hosts, found.get(HOST_KEY + ".pub"))
    refuse_unaccepted_keys(host)
    change = [install(want), reload(host), verify(host)]
    steps = guard.guarded(NAME, [PATH], f"systemctl reload {host.distro.ssh_service}", change, host.env)
    return ItemPlan(NAME, changes=[*file_changes, *drift], steps=steps, guarded=True, notes=notes)


def differences(host, effective: sshd_facts.Effective) -> list[str]:
    """Each setting that `sshd -T` shows otherwise than the drop-in sets it, one line each
    ([] when sshd's settings are unknown: not installed, or `sshd -T` fails)."""
    if not effective.known:
        return []
    out = []
    for keyword, value in _expected(host):
        key = keyword.lower()
        have = effective.get(key)
        if key in sshd_facts.MULTI_VALUED:
            if set(have) != set(value):
                shown = " ".join(have) or ("(anyone)" if key == "allowusers" else "(none)")
                out.append(f"{keyword} {shown}, wanted {' '.join(value)}")
        elif key in _ALGORITHM_LISTS:
            out += _list_differences(keyword, have or "", value)
        elif have != value:
            out.append(f"{keyword} {have or '(unset)'}, wanted {value}")
    return out


def _expected(host) -> list:
    """(Keyword, value as `sshd -T` prints it): a tuple for the keywords that add up."""
    merged: dict = {}
    for keyword, value in settings(host):
        if keyword.lower() in sshd_facts.MULTI_VALUED:
            merged[keyword] = (*merged.get(keyword, ()), value)
        else:
            merged.setdefault(keyword, value)
    return list(merged.items())


def _list_differences(keyword: str, have: str, want: str) -> list[str]:
    offered, wanted_ = [a for a in have.split(",") if a], want.split(",")
    extra = [a for a in offered if a not in wanted_]
    missing = [a for a in wanted_ if a not in offered]
    out = []
    if extra:
        out.append(f"{keyword} offers {', '.join(extra)} (not wanted)")
    if missing:
        out.append(f"{keyword} lacks {', '.join(missing)} (wanted)")
    if not out and offered != wanted_:
        out.append(f"{keyword} order {have}, wanted {want}")
    return out


def _unknown(effective: sshd_facts.Effective) -> list[str]:
    if not effective.installed:
        return ["no sshd on the host: its settings are read once openssh-server is installed"]
    if effective.error:
        return [f"`sshd -T` fails, so the settings in force are unknown: {effective.error.splitlines()[-1]}"]
    return []


# -- the operator's pinned host key ----------------------------------------------------------------


def refuse_unpinned(host, known_hosts: str, public_key) -> None:
    """ProvisionRefused unless `known_hosts` pins this host's ed25519 key: once the drop-in is in
    force sshd offers no other, and a client that pinned only the RSA or ECDSA key (paramiko, the
    deploy's client, among them) could no longer log in. `public_key`: the FileState of
    HOST_KEY.pub on the server."""
    t = host.env.ssh
    if public_key is None or not public_key.exists:
        raise ProvisionRefused(f"{t.host} has no {HOST_KEY}.pub: the drop-in keeps only that host key, so sshd "
                               f"would have none (make it with `ssh-keygen -A` as root there)")
    fields = public_key.content.decode(errors="replace").split()
    server_key = fields[1] if len(fields) >= 2 and fields[0] == HOST_KEY_TYPE else None
    pinned = pinned_keys(known_hosts, t.host, t.port).get(HOST_KEY_TYPE, set())
    if server_key is not None and server_key in pinned:
        return
    name = _known_hosts_name(t.host, t.port)
    why = "pins a different ed25519 key" if pinned else f"pins no {HOST_KEY_TYPE} key"
    raise ProvisionRefused(
        f"{t.known_hosts} {why} for {name}: the sshd hardening keeps only the ed25519 host key, and "
        f"the RSA or ECDSA key that may be pinned instead would lock this machine out. Check the key "
        f"(`ssh-keygen -lf {HOST_KEY}.pub` on the server) and add its line to {t.known_hosts}:\n"
        f"  {name} {HOST_KEY_TYPE} <the key from {HOST_KEY}.pub>")


def refuse_unaccepted_keys(host) -> None:
    """ProvisionRefused when a deploy key is of a kind the drop-in no longer accepts (ECDSA): its
    owner would be locked out the moment sshd reloads."""
    refused = []
    for line in getattr(host, "deploy_keys", ()):
        kind, *rest = line.split()
        # an RSA key says ssh-rsa in authorized_keys; clients sign with it as rsa-sha2-512 or -256
        if kind not in PUBKEY_ALGORITHMS and not (kind == "ssh-rsa" and "rsa-sha2-512" in PUBKEY_ALGORITHMS):
            refused.append(f"{kind} ({rest[1]})" if len(rest) > 1 else kind)
    if refused:
        raise ProvisionRefused(
            f"the hardened sshd accepts ed25519 and RSA (SHA-2) keys only, and the deploy user's keys include "
            f"{', '.join(refused)}: make an ed25519 key (`ssh-keygen -t ed25519`) and name its .pub in "
            f"provision.authorized_keys")


def pinned_keys(known_hosts: str, hostname: str, port: int) -> dict[str, set]:
    """{key type: {base64 key}} that `known_hosts` pins for the host, matched as paramiko matches:
    a plain name or a hashed one (`|1|salt|hash`), `[host]:port` when the port is not 22. Marked
    lines (@cert-authority, @revoked) pin nothing."""
    name = _known_hosts_name(hostname, port)
    out: dict[str, set] = {}
    for line in known_hosts.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@")):
            continue
        names, key_type, key = fields[:3]
        if any(_name_matches(pattern, name) for pattern in names.split(",")):
            out.setdefault(key_type, set()).add(key)
    return out


def _known_hosts_name(hostname: str, port: int) -> str:
    return hostname if int(port) == 22 else f"[{hostname}]:{port}"


def _name_matches(pattern: str, name: str) -> bool:
    if not pattern.startswith("|1|"):
        return pattern == name
    try:
        salt, digest = (base64.b64decode(part, validate=True) for part in pattern[3:].split("|", 1))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


# -- the steps -------------------------------------------------------------------------------------

# The new file replaces the old one (mode and owner set before any byte is written), then `sshd -t`
# reads the whole config as the next reload would; when it refuses, the old file (or none) is put
# back before anything reads it, and the step fails with sshd's own words. The temp names do not
# end in .conf, so sshd's Include never reads a half-written file.
_INSTALL = r"""
set -eu
path=$1 mode=$2 owner=$3 group=$4
dir=$(dirname "$path")
mkdir -p "$dir"
tmp=$(mktemp "$dir/.opskit.XXXXXX")
old=$(mktemp -d "$dir/.opskit-old.XXXXXX")
trap 'rm -rf "$tmp" "$old"' EXIT
chmod "$mode" "$tmp"
chown "$owner:$group" "$tmp"
cat > "$tmp"
[ ! -e "$path" ] || cp -a "$path" "$old/file"
mv -f "$tmp" "$path"
sshd=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)
if ! out=$("$sshd" -t 2>&1); then
    if [ -e "$old/file" ]; then mv -f "$old/file" "$path"; else rm -f "$path"; fi
    echo "refused: \`sshd -t\` rejects the new $path, so the previous one is back (sshd was not reloaded):" >&2
    echo "$out" >&2
    exit 1
fi
"""

# Every setting the drop-in makes must be what `sshd -T` prints: a drop-in that sshd never reads
# (an sshd_config without the Include) fails here, inside the guard, and is reverted.
_VERIFY = r"""
sshd=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)
out=$("$sshd" -T 2>&1 </dev/null) || { echo "sshd -T fails: $out" >&2; exit 1; }
missing=""
while IFS= read -r want; do
    printf '%s\n' "$out" | grep -qxF -- "$want" || missing="$missing
  $want"
done
[ -z "$missing" ] || { echo "sshd -T does not show what the drop-in sets:$missing" >&2; exit 1; }
"""


def install(want: Wanted) -> Run:
    """Put `want` in place and keep it only if `sshd -t` accepts the whole config."""
    return Run(f"write {want.path} (kept only if `sshd -t` accepts it)",
               ["sh", "-c", _INSTALL, "install", want.path, f"{want.mode:04o}", want.owner, want.group],
               on=SERVER, stdin=want.content)


def reload(host) -> Run:
    service = host.distro.ssh_service
    return Run(f"reload {service} (sshd rereads its config; open connections stay)",
               ["systemctl", "reload", service], on=SERVER)


def verify(host) -> Run:
    lines = "".join(f"{keyword.lower()} {value}\n" for keyword, value in settings(host))
    return Run("check that `sshd -T` shows every setting of the drop-in", ["sh", "-c", _VERIFY, "verify"],
               on=SERVER, stdin=lines.encode())
