"""The host's own settings as `invoke provision` makes them and the smoke suite checks them, read
where they are in force: the unattended-upgrades policy as APT merges its files, swap and
vm.swappiness as the kernel has them, journald's cap as the running journald took it, dockerd's
settings as the running daemon reports them. Every probe copes with a bare box (the program
missing: `absent`, never a failed batch).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .base import Fact, script, sections

_ABSENT = "!absent"


# -- unattended upgrades -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpgradePolicy:
    """What APT and unattended-upgrades will do, from all of /etc/apt/apt.conf* merged."""

    scalars: dict  # key -> value (keys with a value of their own)
    lists: dict  # key -> tuple of items (`KEY { "a"; "b"; };`)
    has_apt: bool = True
    program: str | None = None  # unattended-upgrade's path, None when the package is not installed
    timers: dict = field(default_factory=dict)  # unit -> `systemctl is-enabled` ("" when there is none)

    def value(self, key: str) -> str | None:
        return self.scalars.get(key)

    def items(self, key: str) -> tuple:
        return self.lists.get(key, ())

    @property
    def is_enabled(self) -> bool:
        """Whether the daily job runs unattended-upgrade (as apt.systemd.daily decides it)."""
        return (_number(self.value("APT::Periodic::Enable"), 1) != 0
                and _number(self.value("APT::Periodic::Unattended-Upgrade"), 0) != 0)

    @property
    def origins(self) -> tuple:
        return self.items("Unattended-Upgrade::Allowed-Origins") + self.items("Unattended-Upgrade::Origins-Pattern")

    @property
    def blacklist(self) -> tuple:
        return self.items("Unattended-Upgrade::Package-Blacklist")

    def is_held(self, package: str) -> bool:
        """As unattended-upgrade decides it: a blacklist item is a Python regex matched at the start
        of the name (`is_pkgname_in_blacklist`, re.match)."""
        return any(_matches(p, package) for p in self.blacklist)


def _number(value: str | None, default: int) -> int:
    """APT's numbers as apt.systemd.daily reads them: anything that is not one counts as the default."""
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _matches(pattern: str, name: str) -> bool:
    try:
        return re.match(pattern, name) is not None
    except re.error:
        return False


def upgrades() -> Fact:
    """The fact: UpgradePolicy, as `apt-config dump` merges every APT configuration file."""
    return script("system_upgrades.sh", parse=parse_upgrades, name="system_upgrades")


def parse_upgrades(text: str) -> UpgradePolicy:
    """`KEY=VALUE` lines of `apt-config dump --format '%f=%v%n'`: a list is its head `KEY=` followed
    by one `KEY::=ITEM` line per item; anything else with a value is a scalar."""
    s = sections(text)
    apt = s.get("apt", "")
    scalars: dict[str, str] = {}
    lists: dict[str, list[str]] = {}
    for line in apt.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.endswith("::"):
            lists.setdefault(key[:-2], []).append(value)
        elif value:
            scalars[key] = value
    program = s.get("program", "").strip()
    timers = {}
    for line in s.get("timers", "").splitlines():
        unit, _, state = line.strip().partition(" ")
        if unit:
            timers[unit] = state.strip()
    return UpgradePolicy(scalars, {k: tuple(v) for k, v in lists.items()}, apt.strip() != _ABSENT,
                         None if program in ("", _ABSENT) else program, timers)


@dataclass(frozen=True)
class Pending:
    """A package an upgrade would install now."""

    name: str
    current: str | None  # None: new (pulled in)
    candidate: str
    origins: tuple  # "Debian-Security:12/oldstable-security", ...

    @property
    def is_security(self) -> bool:
        return any(o.rsplit("/", 1)[-1].endswith("-security") for o in self.origins)


_INST = re.compile(r"^Inst (\S+) (?:\[(\S+)\] )?\((\S+) (.*?)(?: \[[^\]]*\])?\)")


def pending_upgrades() -> Fact:
    """The fact: what an upgrade would install now, read from the package lists APT last fetched
    (the daily timer refreshes them). Read-only and quick, unlike `unattended-upgrade --dry-run`,
    which takes ~20 s and downloads every package it would install."""
    return script("system_pending.sh", parse=parse_pending, name="system_pending")


def parse_pending(text: str) -> tuple:
    out = []
    for line in text.splitlines():
        m = _INST.match(line.strip())
        if m:
            out.append(Pending(m.group(1), m.group(2), m.group(3),
                               tuple(o.strip() for o in m.group(4).split(",") if o.strip())))
    return tuple(out)


def security_pending(pending, policy: UpgradePolicy) -> tuple:
    """The security upgrades that unattended-upgrades will install on its next run (those of its
    blacklist left out): what a server left unattended is missing now."""
    return tuple(p for p in pending if p.is_security and not policy.is_held(p.name))


# -- memory: swap, swappiness, journald ---------------------------------------------------------------

SWAP_SIGNATURE = "SWAPSPACE2"
_UNITS = {"B": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4, "P": 1024 ** 5}


@dataclass(frozen=True)
class SwapFile:
    path: str
    size: int | None = None  # bytes; None: missing
    mode: int | None = None
    owner: str | None = None
    group: str | None = None
    is_swap: bool = False  # mkswap made it a swap area

    @property
    def exists(self) -> bool:
        return self.size is not None


@dataclass(frozen=True)
class Memory:
    active_swaps: tuple  # the paths in /proc/swaps (in a container: the shared kernel's)
    swap_file: SwapFile
    swappiness: int | None  # the kernel's vm.swappiness (in a container: the shared kernel's)
    journald: dict  # journald.conf key -> (value, file that set it), last one wins as journald reads them
    journald_max_use: int | None  # bytes: the cap the running journald took, None when it has not said

    def journald_setting(self, key: str) -> str | None:
        found = self.journald.get(key)
        return found[0] if found else None


def size_bytes(text: str) -> int | None:
    """journald's sizes (`500M`, `500.0M`, `1.1G`, `4096`) -> bytes; 1024-based, as journald counts."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([BKMGTP]?)\s*", text or "")
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2) or "B"])


def memory(swap_file: str) -> Fact:
    """The fact: Memory, with `swap_file` described."""
    return script("system_memory.sh", swap_file, name="system_memory", parse=lambda t: parse_memory(t, swap_file))


def parse_memory(text: str, swap_file: str) -> Memory:
    s = sections(text)
    swaps = tuple(line.split()[0] for line in s.get("swaps", "").splitlines()[1:] if line.split())
    lines = s.get("swapfile", "missing").splitlines() or ["missing"]
    if lines[0].strip() == "missing":
        sf = SwapFile(swap_file)
    else:
        size, mode, owner, group = lines[0].split()
        signature = lines[1].strip() if len(lines) > 1 else ""
        sf = SwapFile(swap_file, int(size), int(mode, 8), owner, group, signature == SWAP_SIGNATURE)
    swappiness = s.get("swappiness", "").strip()
    running = re.search(r"\bmax ([\d.]+[BKMGTP]?),", s.get("journald_running", ""))
    return Memory(swaps, sf, int(swappiness) if swappiness.isdigit() else None,
                  parse_journald_config(s.get("journald_config", "")),
                  size_bytes(running.group(1)) if running else None)


def parse_journald_config(text: str) -> dict:
    """`systemd-analyze cat-config systemd/journald.conf` -> {key: (value, file)} of its [Journal]
    section, the last assignment winning (the files come in the order journald reads them)."""
    out: dict[str, tuple[str, str]] = {}
    current, section = "", None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# /"):
            current, section = line[2:].strip(), None
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if sep and section == "Journal":
            out[key.strip()] = (value.strip(), current)
    return out


# -- dockerd ------------------------------------------------------------------------------------------


#: what is kept of `docker info` (the rest is large and says nothing about the daemon's settings)
INFO_FIELDS = ("ServerVersion", "LiveRestoreEnabled", "LoggingDriver", "SecurityOptions", "Driver",
               "ContainersRunning", "Warnings")


@dataclass(frozen=True)
class Dockerd:
    installed: bool  # dockerd is on the PATH
    unit: str  # `systemctl is-active docker`: active, inactive, failed, ...
    info: dict | None  # `docker info` of the running daemon, None when none answers

    @property
    def answers(self) -> bool:
        return bool(self.info and self.info.get("ServerVersion"))

    @property
    def version(self) -> str | None:
        return self.info.get("ServerVersion") if self.answers else None

    @property
    def live_restore(self) -> bool | None:
        return bool(self.info.get("LiveRestoreEnabled")) if self.answers else None

    @property
    def logging_driver(self) -> str | None:
        return self.info.get("LoggingDriver") if self.answers else None

    @property
    def security_options(self) -> tuple:
        return tuple(self.info.get("SecurityOptions") or ()) if self.answers else ()

    @property
    def no_new_privileges(self) -> bool | None:
        """Engine 26.1 lists `name=no-new-privileges` among SecurityOptions when daemon.json sets it
        (daemon/info.go, fillSecurityOptions)."""
        return "name=no-new-privileges" in self.security_options if self.answers else None


def dockerd() -> Fact:
    """The fact: Dockerd (the daemon's settings in force; log-opts and userland-proxy are not
    among what `docker info` reports: daemon.json is their only witness)."""
    return script("system_dockerd.sh", parse=parse_dockerd, name="system_dockerd")


def parse_dockerd(text: str) -> Dockerd:
    s = sections(text)
    path = s.get("dockerd", "").strip()
    raw = s.get("info", "").strip()
    info = None
    for candidate in (raw, *reversed(raw.splitlines())):  # one JSON line, warnings or not around it
        if candidate.startswith("{"):
            try:
                info = json.loads(candidate)
                break
            except ValueError:
                continue
    if isinstance(info, dict):
        info = {k: info[k] for k in INFO_FIELDS if k in info}
    return Dockerd(path not in ("", _ABSENT), s.get("active", "").strip() or "inactive",
                   info if isinstance(info, dict) else None)
