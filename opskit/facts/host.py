"""The server itself: Docker's and Compose's versions, disk and inodes, the clock and its time
sync, and what listens on TCP."""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

from . import sshd as sshd_facts
from .base import Fact, Output, marked_blocks, read, script, sections

_VERSION = re.compile(r"^v?\d+\.\d+")


# -- versions -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Versions:
    docker_text: str  # what `docker version` printed: the version, or why there is none
    compose_text: str

    @property
    def docker(self) -> str | None:
        return _version(self.docker_text)

    @property
    def compose(self) -> str | None:
        return _version(self.compose_text)


def _version(text: str) -> str | None:
    return next((line.strip() for line in text.splitlines() if _VERSION.match(line.strip())), None)


def versions() -> Fact:
    return script("versions.sh", parse=parse_versions)


def parse_versions(text: str) -> Versions:
    s = sections(text)
    return Versions(s.get("docker", "").strip(), s.get("compose", "").strip())


# -- disk and inodes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    path: str
    total: int
    available: int  # KB for disk, count for inodes

    @property
    def free_percent(self) -> float | None:
        return None if self.total <= 0 else 100.0 * self.available / self.total


@dataclass(frozen=True)
class Room:
    """Free disk space and inodes, by where: "remote_dir" (its filesystem), "root", "docker_root"."""

    docker_root: str
    disk: dict  # where -> Space (KB), or None when not measured
    inodes: dict  # where -> Space (inodes)

    @property
    def free_mb(self) -> int | None:
        """Free MB on the filesystem of the release folder."""
        space = self.disk.get("remote_dir")
        return space.available // 1024 if space else None


def space(layout, docker_root: bool = False) -> Fact:
    """Disk and inodes of `layout.root`'s filesystem and /, and Docker's data root if asked."""
    return script("space.sh", layout.root, "docker" if docker_root else "", parse=parse_space)


def parse_space(text: str) -> Room:
    s = sections(text)
    docker_root = s.get("docker_root", "").strip()
    where = {"remote_dir": s.get("folder", "").strip() or None, "root": "/", "docker_root": docker_root or None}
    disk, inodes = df(s.get("disk", "")), df(s.get("inodes", ""))
    return Room(docker_root, {k: disk.get(p) for k, p in where.items()}, {k: inodes.get(p) for k, p in where.items()})


def df(section: str) -> dict[str, Space]:
    """`df -Pk` / `df -Pi` lines after `#####path:` marks -> {path: Space}."""
    out = {}
    for path, block in marked_blocks(section, "path"):
        fields = block.split()
        if len(fields) >= 6 and fields[1].lstrip("-").isdigit() and fields[3].lstrip("-").isdigit():
            out[path] = Space(path, int(fields[1]), int(fields[3]))
    return out


# -- the clock ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSync:
    timedatectl: str  # NTPSynchronized: yes, no, or unavailable
    chrony: str  # chrony's leap status line, or unavailable
    adjtimex: str  # the kernel's clock state (5: unsynchronised), or unavailable
    virtualization: str = "none"  # `systemd-detect-virt --container`: none outside a container
    timesyncd: str = "unavailable"  # `systemctl is-enabled systemd-timesyncd`


def timesync() -> Fact:
    return script("timesync.sh", parse=parse_timesync)


def parse_timesync(text: str) -> TimeSync:
    s = sections(text)
    return TimeSync(*(s.get(k, "").strip() for k in ("timedatectl", "chrony", "adjtimex")),
                    s.get("virtualization", "").strip() or "none", s.get("timesyncd", "").strip() or "unavailable")


def clock(strict: bool = False) -> Fact:
    """The server's time, unix seconds (None when `date` gave no number; `strict`: an error)."""
    return Fact("clock", ("date", "+%s.%N"), _strict_clock if strict else lambda out: parse_clock(out.text))


def parse_clock(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class Clock:
    server: float
    local: float  # this machine's time halfway through the round trip
    uncertainty: float  # half the round trip


def sample_clock(connection, tries: int = 3) -> Clock:
    """The server's clock against this machine's, from the shortest of `tries` round trips."""
    best = None
    for _ in range(tries):
        t0 = time.time()
        server = read(connection, clock(strict=True), what="the server's clock",
                      more="date", timeout=15)
        t1 = time.time()
        sample = Clock(server, (t0 + t1) / 2, (t1 - t0) / 2)
        if best is None or sample.uncertainty < best.uncertainty:
            best = sample
    return best


def _strict_clock(out: Output) -> float:
    value = parse_clock(out.text)
    if value is None:
        raise ValueError(f"`date` printed {out.text.strip()[:80]!r}, not a time")
    return value


# -- TCP listeners ------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Listener:
    address: str
    port: int

    @property
    def is_public(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return not ip.is_loopback

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


def listeners() -> Fact:
    return script("listeners.sh", parse=parse_listeners)


def parse_listeners(text: str) -> list[Listener]:
    s = sections(text)
    return tcp_listeners(s.get("tcp", ""), s.get("tcp6", ""))


def _hex_ipv4(h: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(h)[::-1]))


def _hex_ipv6(h: str) -> str:
    raw = bytes.fromhex(h)
    # four 32-bit words, each in host (little-endian) order
    return str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))


def tcp_listeners(proc_net_tcp: str, proc_net_tcp6: str = "") -> list[Listener]:
    """Listening TCP sockets from /proc/net/tcp and /proc/net/tcp6 (state 0A), sorted, unique."""
    found = set()
    for text, conv in ((proc_net_tcp, _hex_ipv4), (proc_net_tcp6, _hex_ipv6)):
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 4 or ":" not in fields[1] or fields[0] == "sl":
                continue
            if fields[3] != "0A":
                continue
            addr, _, port = fields[1].partition(":")
            try:
                found.add(Listener(conv(addr), int(port, 16)))
            except ValueError:
                continue
    return sorted(found)


# -- all of it, for the smoke suite ---------------------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    docker_version: str  # what `docker version` said: the version, or why there is none
    compose_version: str
    docker_root: str
    disk: dict  # "remote_dir" | "root" | "docker_root" -> Space (KB)
    inodes: dict  # same keys -> Space (inodes)
    time_sync: TimeSync
    listeners: list
    sshd_files: dict
    sshd: sshd_facts.Sshd


def gather(connection, layout) -> HostFacts:
    """Everything above and sshd's config, in one round trip."""
    v, room, sync, tcp, files = read(connection, versions(), space(layout, docker_root=True), timesync(), listeners(),
                                     sshd_facts.files(), what="host facts", more="docker info; df -h")
    return HostFacts(v.docker_text, v.compose_text, room.docker_root, room.disk, room.inodes, sync, tcp, files,
                     sshd_facts.sshd_config(files))
