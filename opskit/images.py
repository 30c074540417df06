"""App images: built with no layer cache, then import-checked in a throw-away container, labelled
with the source revision and build digest. A stale or broken image never ships.

Planning is pure (`plan_builds`); `local_images` reads what this machine has.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from dataclasses import dataclass, field

import docker
import docker.errors

from .steps import Plan, Run

LABEL_DIGEST = "opskit.build.digest"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_RELEASE = "opskit.release"

# One container per image runs every check and stops at the first failure, naming it.
_CHECKS = Path(__file__).parent / "checks"
_PYTHON_CHECKS = (_CHECKS / "import_checks.py").read_text()
_NODE_CHECKS = (_CHECKS / "import_checks.js").read_text()


def unchecked(image: str) -> str:
    """Where a build lands until its import checks pass: the real tag then means "checked"."""
    repository, _, tag = image.rpartition(":")
    return f"{repository}:unchecked-{tag}"


def build_step(build, image: str, digest: str, revision: str, release: str, pull: bool) -> Run:
    """`docker buildx build --no-cache`: BuildKit, every layer new (the point: no stale layer).
    The image is tagged `unchecked-…`; `promote_step` gives it its real tags after the checks."""
    # --provenance=false: the docker driver keeps no attestations, and capturing them has crashed
    # Engine 26.1 (a BuildKit nil dereference in walkProvenance) under concurrent builds
    argv = ["docker", "buildx", "build", "--no-cache", "--provenance=false", "--progress", "plain", "--load",
            "--file", str(build.context / build.dockerfile), "--tag", unchecked(image),
            "--label", f"{LABEL_DIGEST}={digest}", "--label", f"{LABEL_REVISION}={revision}",
            "--label", f"{LABEL_RELEASE}={release}"]
    if pull:
        argv.append("--pull")
    for name, value in build.args:
        argv += ["--build-arg", f"{name}={value}"]
    argv.append(str(build.context))
    return Run(f"build {build.name} image {image} (no cache)", argv, stream=True, timeout=1800)


def _tag(text: str) -> str:
    """A valid image tag from a revision such as `abc123-dirty` (tags allow [A-Za-z0-9_.-])."""
    return "".join(c if c.isalnum() or c in "_.-" else "-" for c in text)[:128] or "unknown"


def promote_step(build, image: str, revision: str, release: str) -> Run:
    """The checks passed: tag the image for real (its digest, and what made it: the source
    revision and the release). A failed image keeps only its `unchecked-` tag, never shipped."""
    tags = [image, f"{build.repository}:{_tag(revision)}", f"{build.repository}:release-{release}"]
    script = " && ".join(shlex.join(["docker", "tag", unchecked(image), t]) for t in tags)
    script += " && " + shlex.join(["docker", "image", "rm", unchecked(image)])
    return Run(f"tag {build.name} image {image} (checked)", ["sh", "-c", script])


def check_step(build, image: str) -> Run:
    """Import every module of `build.import_checks` inside the image, with no network."""
    program, script = ("node", _NODE_CHECKS) if build.language == "node" else ("python", _PYTHON_CHECKS)
    flag = "-e" if program == "node" else "-c"
    argv = ["docker", "run", "--rm", "--network", "none", "--entrypoint", program, unchecked(image), flag, script,
            *build.import_checks]
    return Run(f"import checks of {build.name} ({len(build.import_checks)}: {', '.join(build.import_checks)})",
               argv, timeout=300)


def plan_builds(env, release, local: dict, revision: str, rebuild: bool = False,
                pull: bool | None = None) -> Plan:
    """Build what is missing (or everything with `rebuild`), then check it.

    `local` maps image reference -> `LocalImage`, for the images this machine already has. An image
    whose tag (the digest of its inputs) is present was built with no cache from these very inputs,
    so it is neither rebuilt nor re-checked unless `rebuild` is set.
    """
    plan = Plan("build")
    for name, info in sorted(release.builds.items()):
        build, image = env.builds[name], info["image"]
        have = local.get(image)
        if have is not None and have.labels.get(LABEL_DIGEST) == info["context_digest"] and not rebuild:
            continue
        should_pull = (not env.ship_images) if pull is None else pull
        plan.add(build_step(build, image, info["context_digest"], revision, release.id, should_pull))
        if build.import_checks:
            plan.add(check_step(build, image))
        plan.add(promote_step(build, image, revision, release.id))
    return plan


@dataclass(frozen=True)
class LocalImage:
    """What this machine's engine says about one image it has."""

    id: str
    labels: dict = field(default_factory=dict)
    layers: tuple = ()  # RootFS diff ids, base first


def local_images(references) -> dict:
    """{reference: LocalImage} for the references this machine's engine has (the docker SDK's
    inspect: a read; an engine that does not answer has none of them)."""
    refs = sorted(set(references))
    if not refs:
        return {}
    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return {}
    out = {}
    try:
        for ref in refs:
            try:
                image = client.images.get(ref).attrs
            except docker.errors.DockerException:  # not there (ImageNotFound), or the engine went away
                continue
            out[ref] = LocalImage(image["Id"], (image.get("Config") or {}).get("Labels") or {},
                                  tuple((image.get("RootFS") or {}).get("Layers") or ()))
    finally:
        client.close()
    return out
