"""Item: a default-deny inbound firewall with nftables, Docker-published ports included.

In: established traffic, loopback, the ICMP/ICMPv6 that ping, path MTU and neighbour discovery
need, SSH (new connections rate-limited per source), and `provision.firewall.allow` (default
80/tcp, 443/tcp, 443/udp). Nothing else, and that holds for ports Docker publishes too: those are
DNATed and forwarded, never seen by `input`, so the table's forward chain lets in only what Docker
DNATed from an allowed port.

Why a table of our own and not Docker's DOCKER-USER chain: every base chain on a hook must accept a
packet and a drop in any of them is final, so our forward chain holds Docker's traffic whatever
Docker's own chains say, with no rule of ours inside Docker's tables. DOCKER-USER lives in the
`ip filter` table that Docker's iptables-nft manages ("do not touch" in nft's words): it does not
exist when nftables.service loads at boot, before dockerd starts; it would need iptables syntax
beside this file, and an `ip6 filter` twin for IPv6. Docker never touches `inet opskit`, and we
never touch Docker's tables, so each survives the other's restart.

Writes /etc/nftables.conf (checked with `nft -c` first), enables nftables.service so a boot loads
it, and loads it only when the file or the LOADED table differs from what is wanted (a rule
deleted by hand is found and put back). The change is guarded: a new login as the deploy user must
work before it is kept. Will not touch Docker's tables or any other: our file never flushes the
ruleset, and a drop-in makes `systemctl stop nftables` remove only our table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from ..facts import files as file_facts
from ..facts import firewall as firewall_facts
from ..steps import SERVER, Run
from . import guard
from .item import Host, ItemPlan, Wanted, converge_files, put

NAME = "firewall"
TITLE = "firewall (nftables default-deny, Docker-published ports included)"
CONF = "/etc/nftables.conf"
FAMILY, TABLE = "inet", "opskit"
UNIT = firewall_facts.UNIT
DROPIN = f"/etc/systemd/system/{UNIT}.d/opskit.conf"
#: the line that marks the ruleset file as ours (a revert restores an older file: is it ours?)
MARK = "# opskit firewall, written by `invoke provision` (the firewall item)."
LOAD = ["nft", "-f", CONF]
# What a revert runs once the old file is back (the proof failed, or the timer fired): an older
# file of ours is loaded again; any other one is not (Debian's default says `flush ruleset`, which
# would drop Docker's rules): our table is removed instead, as it was before our first load.
REVERT = (f"if grep -qxF '{MARK}' {CONF} 2>/dev/null; then nft -f {CONF}; "
          f"else nft delete table {FAMILY} {TABLE} 2>/dev/null || true; fi")
# Debian's unit stops with `nft flush ruleset`: Docker's rules would go with ours, and published
# ports stay dead until dockerd restarts. Stopping the firewall removes our table only.
_DROPIN = f"""# Written by `invoke provision` (the firewall item): stopping nftables removes opskit's table
# only; the packaged `nft flush ruleset` would remove Docker's rules too.
[Service]
ExecStop=
ExecStop=-/usr/sbin/nft delete table {FAMILY} {TABLE}
""".encode()


def packages(host: Host) -> tuple:
    return ("nftables",)


def ssh_port(host: Host) -> int:
    """The port sshd listens on, on the server. The simulated VPS publishes 127.0.0.1:ssh.port to
    its port 22 (opskit/sim/vps_plan.publish_args), so there the firewall must open 22."""
    return 22 if getattr(host.env, "vps", None) else host.env.ssh.port


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    here = Path(__file__).resolve().parent
    jinja = jinja2.Environment(loader=jinja2.FileSystemLoader(str(here)), undefined=jinja2.StrictUndefined,
                               keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    return jinja.get_template("nftables.conf.j2")


def ruleset(host: Host) -> bytes:
    """The ruleset file, rendered (deterministic: the openings sorted, each once)."""
    s = host.settings
    allow = sorted(set(s.allow), key=lambda o: (o.protocol, o.port))
    return _template().render(mark=MARK, family=FAMILY, table=TABLE, ssh_port=ssh_port(host),
                              ssh_rate=s.ssh_new_per_minute, allow=allow).encode()


def wanted(host: Host) -> list[Wanted]:
    # 0755 and a #! line, as Debian ships it: the file can be run to load it
    return [Wanted(CONF, ruleset(host), 0o755, validate=("nft", "-c", "-f", "%s")), Wanted(DROPIN, _DROPIN)]


def facts(host: Host) -> tuple:
    return (firewall_facts.firewall(CONF), file_facts.files(CONF, DROPIN, name="firewall_files"))


def loaded_differences(fw: firewall_facts.Firewall) -> list[str]:
    """How the loaded table differs from the one the ruleset file on the server defines."""
    if not fw.installed:
        return [f"table {FAMILY} {TABLE} is not loaded (nft is not installed yet)"]
    if fw.ruleset is None:
        return [f"the loaded ruleset could not be read ({fw.error}): it will be loaded again"]
    loaded = fw.table(FAMILY, TABLE)
    if loaded is None:
        return [f"table {FAMILY} {TABLE} is not loaded"]
    file_table = fw.file_table(FAMILY, TABLE)
    if file_table is None:
        why = fw.file_error or f"it defines no table {FAMILY} {TABLE}"
        return [f"{CONF} could not be compared with the loaded table ({why})"]
    if loaded.objects == file_table.objects:
        return []
    have, want = loaded.chains, file_table.chains
    parts = [_chain_difference(n, have, want) for n in sorted(set(have) | set(want)) if have.get(n) != want.get(n)]
    return [f"the loaded table {FAMILY} {TABLE} differs from {CONF}: {'; '.join(parts) or 'its sets differ'}"]


def _chain_difference(name: str, have: dict, want: dict) -> str:
    state = "missing" if name not in have else "not in the file" if name not in want else "differs"
    count = {side: len(chains[name].rules) if name in chains else 0 for side, chains in (("have", have), ("want", want))}
    return f"chain {name} {state} ({count['have']} rules loaded, {count['want']} in the file)"


def plan(host: Host, fw: firewall_facts.Firewall, found: dict) -> ItemPlan:
    conf, dropin = wanted(host)
    changes, steps = converge_files([dropin], found)
    if steps:
        steps.append(Run(f"systemd reads the new {UNIT} drop-in", ["systemctl", "daemon-reload"], on=SERVER))

    conf_changes = conf.differences(found.get(CONF))
    # the loaded table is compared with the file when the file is the wanted one; a new file is
    # loaded anyway, and the table an old one gave says nothing about it
    outdated_but_loaded = conf_changes and fw.table(FAMILY, TABLE) is not None
    load_changes = [] if outdated_but_loaded else loaded_differences(fw)
    if conf_changes or load_changes:
        changes += conf_changes + load_changes
        change = ([put(f"write {CONF} (checked with `nft -c` first)", conf)] if conf_changes else []) + \
            [Run(f"load {CONF} (replaces table {FAMILY} {TABLE} only; Docker's rules stay)", LOAD, on=SERVER)]
        steps += guard.guarded(NAME, [CONF], REVERT, change, host.env)

    if fw.enabled != "enabled":
        changes.append(f"{UNIT} is {fw.enabled or 'not installed'}, wanted enabled (so that a boot loads {CONF})")
        steps.append(Run(f"enable {UNIT}", ["systemctl", "enable", "--quiet", UNIT], on=SERVER))
    if fw.active != "active":
        changes.append(f"{UNIT} is {fw.active or 'not installed'}, wanted active")
        steps.append(Run(f"start {UNIT} (loads {CONF} once more)", ["systemctl", "start", UNIT], on=SERVER))
    return ItemPlan(NAME, changes, steps, guarded=any(guard.is_arm(s) for s in steps))
