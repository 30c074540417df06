"""The firewall in force: nftables' loaded ruleset as the kernel holds it (`nft -j list ruleset`),
whether the unit that loads it at boot is enabled and active, and what the ruleset file would give
when loaded alone (read in a network namespace of its own, so the comparison is done by nft
itself, whatever its version prints).

`Table` answers what the smoke suite asks of the effective state: the input policy, the ports
open to everyone, the SSH rate limit, and whether forwarded (Docker-published) traffic is held to
the same openings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .base import Fact, script, sections

UNIT = "nftables.service"


@dataclass(frozen=True)
class Chain:
    name: str
    hook: str | None  # None: a regular chain (reached by jump/goto only)
    policy: str | None
    rules: tuple  # each rule's `expr` list, in order


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    objects: tuple  # the table's objects as nft lists them, without handles or set elements

    @property
    def chains(self) -> dict[str, Chain]:
        out = {}
        for o in self.objects:
            if "chain" in o:
                c = o["chain"]
                out[c["name"]] = Chain(c["name"], c.get("hook"), c.get("policy"), ())
        for o in self.objects:
            if "rule" in o and o["rule"]["chain"] in out:
                c = out[o["rule"]["chain"]]
                out[c.name] = Chain(c.name, c.hook, c.policy, (*c.rules, tuple(o["rule"]["expr"])))
        return out

    def hooked(self, hook: str) -> Chain | None:
        """The base chain on `hook` (input, forward...), if the table has one."""
        return next((c for c in self.chains.values() if c.hook == hook), None)

    @property
    def input_policy(self) -> str | None:
        chain = self.hooked("input")
        return chain.policy if chain else None

    @property
    def forward_policy(self) -> str | None:
        chain = self.hooked("forward")
        return chain.policy if chain else None

    def open_ports(self) -> tuple:
        """`PORT/PROTO` that the input chain accepts from anyone (a lone `tcp dport N accept`)."""
        chain = self.hooked("input")
        return tuple(p for rule in (chain.rules if chain else ()) for p in _plain_accept(rule))

    def forwarded_ports(self) -> tuple:
        """`PORT/PROTO` that the forward chain lets through to a container when Docker published
        that port (DNAT, matched on the port the client asked for)."""
        chain = self.hooked("forward")
        return tuple(p for rule in (chain.rules if chain else ()) for p in _dnat_accept(rule))

    def ssh_limits(self) -> tuple:
        """(port, rate, per, burst) of each per-source rate limit that drops new connections."""
        chain = self.hooked("input")
        return tuple(limit for rule in (chain.rules if chain else ()) if (limit := _rate_limit(rule)))


@dataclass(frozen=True)
class Firewall:
    installed: bool  # nft is there
    ruleset: tuple | None  # the loaded objects (`nft -j list ruleset`); None: absent or unreadable
    enabled: str  # `systemctl is-enabled` of the unit: enabled, disabled, "" (no such unit)
    active: str  # `systemctl is-active`: active, inactive, failed
    from_file: tuple | None = None  # the file's objects when loaded alone; None: not read
    error: str = ""  # why `ruleset` is None although nft is there
    file_error: str = ""  # why the file could not be loaded alone (it is not valid nft, say)

    def table(self, family: str, name: str) -> Table | None:
        """The loaded table, or None."""
        return _table(self.ruleset, family, name)

    def file_table(self, family: str, name: str) -> Table | None:
        """The same table as the ruleset file defines it, or None."""
        return _table(self.from_file, family, name)


def firewall(conf: str | None = None) -> Fact:
    """The fact; with `conf` (a ruleset file's path) it also reads what that file gives when loaded."""
    return script("firewall.sh", UNIT, *([conf] if conf else []), parse=parse_firewall)


def parse_firewall(text: str) -> Firewall:
    s = sections(text)
    unit = dict(line.strip().partition("=")[::2] for line in s.get("unit", "").splitlines())
    enabled, active = unit.get("enabled", ""), unit.get("active", "")
    loaded = s.get("loaded", "").strip()
    if loaded == "!absent":
        return Firewall(False, None, enabled, active)
    ruleset, error = _objects(loaded, "nft -j list ruleset")
    from_file, file_error = _objects(s["file"].strip(), "the ruleset file") if s.get("file", "").strip() else (None, "")
    return Firewall(True, ruleset, enabled, active, from_file, error, file_error)


def _objects(text: str, what: str) -> tuple[tuple | None, str]:
    if text.startswith("!failed"):
        return None, text[len("!failed"):].strip() or f"{what} failed"
    try:
        found = json.loads(text)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{what} did not print nft's JSON ({exc}): {text[:200]!r}") from None
    return tuple(o for o in found if "metainfo" not in o), ""


# What the kernel keeps that is not configuration: object handles, and the elements that dynamic
# sets collect (the SSH rate limit's sources). Our rules keep no counters.
_VOLATILE = ("handle", "elem")


def _table(objects: tuple | None, family: str, name: str) -> Table | None:
    if objects is None:
        return None
    mine, found = [], False
    for o in objects:
        kind, body = next(iter(o.items()))
        if kind == "table":
            found = found or (body.get("family"), body.get("name")) == (family, name)
            if (body.get("family"), body.get("name")) != (family, name):
                continue
        elif (body.get("family"), body.get("table")) != (family, name):
            continue
        mine.append({kind: _stable(body)})
    return Table(family, name, tuple(mine)) if found else None


def _stable(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in _VOLATILE}


def _dport(match: dict) -> tuple[str, list] | None:
    """(protocol, [ports]) of a `tcp/udp dport N` or `dport { N, M }` match."""
    left, right = match.get("left", {}), match.get("right")
    payload = left.get("payload", {}) if isinstance(left, dict) else {}
    if match.get("op") != "==" or payload.get("field") != "dport" or payload.get("protocol") not in ("tcp", "udp"):
        return None
    ports = right["set"] if isinstance(right, dict) and "set" in right else [right]
    return payload["protocol"], [p for p in ports if isinstance(p, int)]


def _plain_accept(rule: tuple) -> list[str]:
    if len(rule) != 2 or "accept" not in rule[-1] or "match" not in rule[0]:
        return []
    found = _dport(rule[0]["match"])
    return [f"{p}/{found[0]}" for p in found[1]] if found else []


def _dnat_accept(rule: tuple) -> list[str]:
    """`ct status dnat meta l4proto P ct original proto-dst N accept` -> ["N/P"]."""
    if not rule or "accept" not in rule[-1]:
        return []
    status = proto = port = None
    for e in rule[:-1]:
        m = e.get("match")
        if not m:
            return []
        left, right = m.get("left", {}), m.get("right")
        if left == {"ct": {"key": "status"}} and right in ("dnat", ["dnat"]):
            status = True
        elif left == {"meta": {"key": "l4proto"}} and m.get("op") == "==":
            proto = right
        elif left == {"ct": {"key": "proto-dst", "dir": "original"}} and m.get("op") == "==":
            port = right
        else:
            return []
    if not (status and proto in ("tcp", "udp") and port is not None):
        return []
    ports = port["set"] if isinstance(port, dict) and "set" in port else [port]
    return [f"{p}/{proto}" for p in ports if isinstance(p, int)]


def _rate_limit(rule: tuple):
    """(port, rate, per, burst) of `tcp dport N ct state new update @set { KEY limit rate over R/PER
    burst B packets } drop`, else None."""
    if not rule or "drop" not in rule[-1]:
        return None
    port = limit = None
    for e in rule[:-1]:
        if "match" in e and (found := _dport(e["match"])):
            port = found[1][0] if len(found[1]) == 1 else None
        elif "set" in e and e["set"].get("op") in ("add", "update"):
            for stmt in e["set"].get("stmt", []):
                if "limit" in stmt and stmt["limit"].get("inv"):
                    limit = stmt["limit"]
    if port is None or limit is None:
        return None
    return port, limit["rate"], limit.get("per"), limit.get("burst", 0)
