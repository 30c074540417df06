"""The inventory's `provision:` section: what `invoke provision` makes of a bare server.

Every key has a safe default (README.md, "Provisioning"); `parse(parser)` reads the merged section
with the inventory's Parser, so problems carry their key path like every other key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import values
from .model import expand

DISTRIBUTIONS = ("debian-12", "ubuntu-24.04")
DOCKER_FROM = ("distribution", "docker")
#: never upgraded by unattended-upgrades: an unattended containerd upgrade that leaves dockerd
#: stopped is a known outage; Docker is upgraded on purpose, with a deploy's checks after it
DOCKER_PACKAGES = ("docker.io", "docker-cli", "docker-compose", "docker-buildx", "docker-ce", "docker-ce-cli",
                   "docker-buildx-plugin", "docker-compose-plugin", "docker-compose-v2", "containerd",
                   "containerd.io", "runc")


@dataclass(frozen=True)
class Opening:
    """A port the firewall lets in from anywhere."""

    port: int
    protocol: str  # tcp or udp

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


@dataclass(frozen=True)
class Provision:
    bootstrap_user: str  # who the provider lets in first (Hetzner: root); refused after provisioning
    authorized_keys: tuple  # Paths of public keys the deploy user is given
    distribution: str  # a key of opskit.provision.distros.DISTROS
    docker_from: str  # "distribution" (Debian's/Ubuntu's packages) or "docker" (download.docker.com)
    ssh_max_auth_tries: int
    ssh_new_per_minute: int  # new SSH connections per source address and minute (the firewall's limit)
    allow: tuple  # Openings besides SSH
    upgrades: bool  # unattended security upgrades
    hold: tuple  # package names unattended-upgrades never touches
    reboot: bool  # reboot at reboot_time when an upgrade needs it
    reboot_time: str  # HH:MM, the server's time
    swap_mb: int  # 0: no swap file
    swappiness: int
    journal_max_use: str  # journald's SystemMaxUse (e.g. 500M)
    live_restore: bool
    userland_proxy: bool
    no_new_privileges: bool


def _opening(value) -> Opening:
    m = re.fullmatch(r"(\d{1,5})/(tcp|udp)", str(value)) if isinstance(value, (str, int)) else None
    if not m or not 1 <= int(m.group(1)) <= 65535:
        raise ValueError(f"{values.shown(value)} is not a port and protocol (expected e.g. 443/tcp or 443/udp)")
    return Opening(int(m.group(1)), m.group(2))


def _choice(options):
    def parse(value):
        if value not in options:
            raise ValueError(f"{values.shown(value)} is not one of: {', '.join(options)}")
        return value
    return parse


def _count(low: int, high: int):
    def parse(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {values.shown(value)}")
        return value
    return parse


def _clock(value) -> str:
    if isinstance(value, str) and re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        return value
    raise ValueError(f"{values.shown(value)} is not a time of day (expected HH:MM, e.g. 04:30)")


def _megabytes(value) -> int:
    """`2g`, `512m` or 0 -> MB."""
    if value == 0:
        return 0
    m = re.fullmatch(r"(\d+)([mg])", str(value).lower()) if isinstance(value, (str, int)) else None
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{values.shown(value)} is not a size (expected e.g. 2g or 512m, or 0 for none)")
    return int(m.group(1)) * (1024 if m.group(2) == "g" else 1)


def _journal_size(value) -> str:
    if isinstance(value, str) and re.fullmatch(r"[1-9]\d*[KMG]", value):
        return value
    raise ValueError(f"{values.shown(value)} is not a journal size (expected e.g. 500M or 2G)")


def _package(value) -> str:
    if isinstance(value, str) and re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", value):
        return value
    raise ValueError(f"{values.shown(value)} is not a Debian package name")


def _keys(base: Path):
    def parse(value):
        if not isinstance(value, list):
            raise ValueError(f"expected a list of public key files, got {values.shown(value)}")
        return tuple(expand(values.plain_text(v), base) for v in value)
    return parse


def _list(item):
    def parse(value):
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {values.shown(value)}")
        return tuple(item(v) for v in value)
    return parse


SECTIONS = {"ssh": {"max_auth_tries", "new_connections_per_minute"}, "firewall": {"allow"},
            "upgrades": {"security", "hold", "reboot", "reboot_time"},
            "docker": {"live_restore", "userland_proxy", "no_new_privileges"}}
KEYS = {"bootstrap_user", "authorized_keys", "distribution", "docker_from", "swap", "swappiness",
        "journal_max_use", *SECTIONS}


def parse(p, key_file: Path | None) -> Provision:
    """The `provision:` section through the inventory Parser `p` (problems recorded there)."""
    p.section(("provision",), KEYS, required=False)
    for name, allowed in SECTIONS.items():
        p.section(("provision", name), allowed, required=False)

    def get(parse_value, *keys, default):
        return p.typed(parse_value, "provision", *keys, required=False, default=default)

    default_keys = (Path(f"{key_file}.pub"),) if key_file else ()
    return Provision(
        bootstrap_user=get(values.unix_user, "bootstrap_user", default="root"),
        authorized_keys=get(_keys(p.base), "authorized_keys", default=()) or default_keys,
        distribution=get(_choice(DISTRIBUTIONS), "distribution", default="debian-12"),
        docker_from=get(_choice(DOCKER_FROM), "docker_from", default="distribution"),
        ssh_max_auth_tries=get(_count(1, 6), "ssh", "max_auth_tries", default=3),
        ssh_new_per_minute=get(_count(1, 600), "ssh", "new_connections_per_minute", default=30),
        allow=get(_list(_opening), "firewall", "allow",
                  default=(Opening(80, "tcp"), Opening(443, "tcp"), Opening(443, "udp"))),
        upgrades=p.boolean("provision", "upgrades", "security", default=True),
        hold=get(_list(_package), "upgrades", "hold", default=DOCKER_PACKAGES),
        reboot=p.boolean("provision", "upgrades", "reboot", default=False),
        reboot_time=get(_clock, "upgrades", "reboot_time", default="04:00"),
        swap_mb=get(_megabytes, "swap", default=2048),
        swappiness=get(_count(0, 100), "swappiness", default=10),
        journal_max_use=get(_journal_size, "journal_max_use", default="500M"),
        live_restore=p.boolean("provision", "docker", "live_restore", default=True),
        userland_proxy=p.boolean("provision", "docker", "userland_proxy", default=False),
        no_new_privileges=p.boolean("provision", "docker", "no_new_privileges", default=True),
    )
