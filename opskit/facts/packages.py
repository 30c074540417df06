"""Which Debian packages a server has, its apt mirror, its distribution and whether it is a container."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .base import Fact, script, sections


@dataclass(frozen=True)
class Packages:
    installed: dict  # name -> version, for the names asked about that are installed
    mirror: str | None  # the distribution's own mirror, as its apt sources name it
    os_release: dict  # /etc/os-release: ID, VERSION_ID, PRETTY_NAME...
    virtualization: str  # `systemd-detect-virt --container`: "none" on a VM or bare metal

    @property
    def in_container(self) -> bool:
        return self.virtualization not in ("none", "")


def packages(*names: str) -> Fact:
    return script("packages.sh", *names, parse=parse_packages)


def parse_packages(text: str) -> Packages:
    s = sections(text)
    installed = dict(line.split(" ", 1) for line in s.get("installed", "").splitlines() if " " in line)
    release = {}
    for line in s.get("os_release", "").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            parts = shlex.split(value) if value.strip() else [""]
            release[key.strip()] = parts[0] if parts else ""
    return Packages(installed, s.get("mirror", "").strip() or None, release,
                    s.get("virtualization", "").strip() or "none")
