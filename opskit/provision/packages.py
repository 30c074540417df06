"""Item: the packages every other item needs, Docker Engine + Compose v2 + buildx among them, from
where the inventory says (`provision.docker_from`). Installs only what is missing; upgrades nothing
(that is unattended-upgrades' job, and Docker's upgrades are deliberate)."""

from __future__ import annotations

from ..facts import files as file_facts
from ..facts import packages as package_facts
from ..steps import SERVER, Run
from .item import Host, ItemPlan, Wanted, converge_files

NAME = "packages"
TITLE = "packages (Docker Engine, Compose v2, buildx, and what the other items need)"
APT = ("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o", "DPkg::Lock::Timeout=600", "-o", "Dpkg::Options::=--force-confdef",
       "-o", "Dpkg::Options::=--force-confold")


def source(host: Host):
    return host.distro.docker[host.settings.docker_from]


def packages(host: Host) -> tuple:
    fetch = ("curl", "gnupg") if source(host).repository else ()
    return (*host.distro.base_packages, *fetch, *source(host).packages)


def _source_files(host: Host, mirror: str | None) -> list[Wanted]:
    src = source(host)
    if src.suite_line:
        name = f"opskit-{src.suite_line}"
        sources = (f"Types: deb\nURIs: {mirror}\nSuites: {src.suite_line}\nComponents: main\n"
                   "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n").encode()
        # only the packages named `pkg/suite` come from there; nothing else moves to it
        pin = f"Package: *\nPin: release n={src.suite_line}\nPin-Priority: 100\n".encode()
        return [Wanted(f"/etc/apt/sources.list.d/{name}.sources", sources),
                Wanted(f"/etc/apt/preferences.d/{name}", pin)]
    if src.repository:
        sources = (f"Types: deb\nURIs: {src.repository}\nSuites: {host.distro.codename}\nComponents: stable\n"
                   "Signed-By: /etc/apt/keyrings/docker.asc\n").encode()
        return [Wanted("/etc/apt/sources.list.d/docker.sources", sources)]
    return []


def facts(host: Host) -> tuple:
    paths = [w.path for w in _source_files(host, "-")]
    return (package_facts.packages(*(host.packages or packages(host))), file_facts.files(*paths, name="apt_sources"))


# Docker's key: fetched over TLS, then refused unless its fingerprint is the one Docker publishes.
_DOCKER_KEY = r"""
set -eu
url=$1 fingerprint=$2
install -d -m 0755 /etc/apt/keyrings
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
curl -fsSL "$url" -o "$tmp"
found=$(gpg --show-keys --with-colons "$tmp" | awk -F: '$1 == "fpr" {print $10; exit}')
[ "$found" = "$fingerprint" ] || { echo "Docker's key has fingerprint $found, not $fingerprint: refused" >&2; exit 1; }
install -m 0644 "$tmp" /etc/apt/keyrings/docker.asc
"""


def plan(host: Host, found, sources) -> ItemPlan:
    wanted = host.packages or packages(host)
    missing = [name for name in wanted if name not in found.installed]
    src = source(host)
    if src.suite_line and not found.mirror:
        raise ValueError("the server's apt sources name no mirror (no URIs: in debian.sources, no deb line): "
                         "fix its apt sources first")
    changes, steps = converge_files(_source_files(host, found.mirror), sources)
    if src.repository and (changes or missing):
        steps.insert(0, Run("fetch Docker's apt key and check its fingerprint",
                            ["sh", "-c", _DOCKER_KEY, "docker-key", src.key_url, src.key_fingerprint], on=SERVER))
    if missing:
        changes.append(f"not installed: {', '.join(missing)}")
    if changes:
        steps.append(Run("apt-get update", [*APT, "update", "-q"], on=SERVER, timeout=900))
    if missing:
        pinned = set(src.from_release) if src.release else set()
        names = [f"{n}/{src.release}" if n in pinned else n for n in missing]
        steps.append(Run(f"install {', '.join(missing)}", [*APT, "install", "-y", "-q", "--no-install-recommends",
                                                           *names], on=SERVER, timeout=1800, stream=True))
    return ItemPlan(NAME, changes, steps)
