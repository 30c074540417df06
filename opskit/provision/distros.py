"""What differs between the distributions provisioning knows, as data: package names, where Docker
comes from, service names. Tested end to end on Debian 12 (the simulated VPS); Ubuntu 24.04's
entries are read from Ubuntu's packaging, not run here (no Ubuntu mirror is reachable).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ProvisionRefused


@dataclass(frozen=True)
class DockerSource:
    """Where Docker's packages come from, and which ones are Engine, CLI, Compose v2 and buildx."""

    packages: tuple
    release: str | None = None  # from_release come from that suite (`pkg/suite`), pinned low for the rest
    from_release: tuple = ()
    suite_line: str | None = None  # deb822 suite of an extra source (on the distribution's own mirror)
    repository: str | None = None  # a foreign repository (deb822 URIs), its key at key_url
    key_url: str | None = None
    key_fingerprint: str | None = None


@dataclass(frozen=True)
class Distro:
    key: str  # the inventory's `provision.distribution`
    os_id: str  # /etc/os-release ID and VERSION_ID it must match
    version_id: str
    codename: str
    ssh_service: str
    base_packages: tuple  # what every provisioned host has (sudo for the deploy user, time sync)
    docker: dict  # docker_from -> DockerSource


# Docker's own repository signs with this key (docs.docker.com/engine/install/debian).
DOCKER_KEY = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_CE = ("docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin")

DISTROS = {
    # bookworm's docker.io is 20.10 with Compose v1 (no `up --wait`): trixie's Engine 26, CLI, Compose
    # v2, buildx and containerd are installed by name from trixie, at priority 100 so nothing else
    # moves there. They need libc6 >= 2.34 (bookworm: 2.36); trixie's runc and iptables need 2.38,
    # which would drag libc6 and base-files (the server would call itself Debian 13), so those two
    # stay bookworm's. `apt-get -t trixie` is what must never be used here.
    "debian-12": Distro(
        "debian-12", "debian", "12", "bookworm", "ssh", ("sudo", "systemd-timesyncd", "ca-certificates"),
        {"distribution": DockerSource(("docker.io", "docker-cli", "docker-compose", "docker-buildx", "containerd",
                                       "runc", "iptables", "tini"), release="trixie", suite_line="trixie",
                                      from_release=("docker.io", "docker-cli", "docker-compose", "docker-buildx",
                                                    "containerd")),
         "docker": DockerSource(DOCKER_CE, repository="https://download.docker.com/linux/debian",
                                key_url="https://download.docker.com/linux/debian/gpg", key_fingerprint=DOCKER_KEY)}),
    # noble has Engine 26+ and Compose v2 (docker-compose-v2) in its own archive; its sshd is
    # socket-activated, and `systemctl reload ssh` still rereads sshd_config.d.
    "ubuntu-24.04": Distro(
        "ubuntu-24.04", "ubuntu", "24.04", "noble", "ssh", ("sudo", "systemd-timesyncd", "ca-certificates"),
        {"distribution": DockerSource(("docker.io", "docker-compose-v2", "docker-buildx", "containerd", "runc",
                                       "iptables")),
         "docker": DockerSource(DOCKER_CE, repository="https://download.docker.com/linux/ubuntu",
                                key_url="https://download.docker.com/linux/ubuntu/gpg", key_fingerprint=DOCKER_KEY)}),
}


def distro(key: str, os_release: dict) -> Distro:
    """The Distro the inventory names, refused when the server's /etc/os-release is another one."""
    d = DISTROS[key]
    found = (os_release.get("ID"), os_release.get("VERSION_ID"))
    if found != (d.os_id, d.version_id):
        raise ProvisionRefused(
            f"the server runs {os_release.get('PRETTY_NAME') or found}, but provision.distribution is {key}: "
            f"set provision.distribution to one of {', '.join(k for k, v in DISTROS.items())} that matches it")
    return d
