"""App images: built with no layer cache, then import-checked in a throw-away container, labelled
with the source revision and build digest. A stale or broken image never ships.

Planning is pure (`plan_builds`); `local_images` reads what this machine has.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
from pathlib import Path
from dataclasses import dataclass, field

import docker
import docker.errors

from . import dockerfile
from .sources import files_digest, files_read
from .steps import Plan, Run

LABEL_DIGEST = "opskit.build.digest"
LABEL_DEPENDENCY_DIGEST = "opskit.dependency.digest"
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


@dataclass(frozen=True)
class Layered:
    """A build whose dependency part (`dockerfile.split`) is an image of its own, named by the
    digest of exactly what it reads: reused while that digest holds, rebuilt with no cache when not."""

    image: str  # <repository, registry left out>:deps-<digest>
    digest: str
    split: dockerfile.Split


def dependency_parts(env, refresh: bool = False) -> dict:
    """{build name: `Layered`, or the reason (str) it is built whole}. Reads the Dockerfiles, the
    context files the dependency parts copy and this machine's base images (their ids). `refresh`
    pulls the base images first, so that the digest names the base the build will use."""
    out, splits = {}, {}
    for name, build in sorted(env.builds.items()):
        try:
            splits[name] = dockerfile.split((build.context / build.dockerfile).read_text(), dict(build.args))
        except (dockerfile.Unsupported, OSError, ValueError) as why:
            out[name] = f"{build.dockerfile}: {why}"
    if refresh:
        for base in sorted({b for s in splits.values() for b in s.bases}):
            subprocess.run(["docker", "pull", "--quiet", base], capture_output=True, timeout=900)
    bases = local_images(b for s in splits.values() for b in s.bases)
    for name, split in splits.items():
        build = env.builds[name]
        missing = [b for b in split.bases if b not in bases]
        if missing:
            out[name] = f"base image {', '.join(missing)} is not on this machine"
            continue
        h = hashlib.sha256(b"opskit dependency part v1\0" + split.dependency_dockerfile.encode() + b"\0")
        for arg, value in build.args:
            h.update(f"arg\0{arg}={value}\0".encode())
        for base in split.bases:
            h.update(f"base\0{base}\0{bases[base].id}\0".encode())
        h.update(files_digest(build.context, files_read(build.context, split.context_sources)).encode())
        digest = h.hexdigest()
        out[name] = Layered(f"{local_repository(build.repository)}:deps-{digest[:20]}", digest, split)
    return out


def local_repository(repository: str) -> str:
    """The repository without its registry (Docker's rule: a first part with a dot or a colon, or
    `localhost`): a dependency image never leaves this machine, and an environment that pushes
    to a registry builds on the same one as the others."""
    first, sep, rest = repository.partition("/")
    return rest if sep and ("." in first or ":" in first or first == "localhost") else repository


def _build_argv(build, tag: str, labels: list, pull: bool, stdin_dockerfile: bool) -> list:
    # --provenance=false: the docker driver keeps no attestations, and capturing them has crashed
    # Engine 26.1 (a BuildKit nil dereference in walkProvenance) under concurrent builds
    argv = ["docker", "buildx", "build", "--no-cache", "--provenance=false", "--progress", "plain", "--load",
            "--file", "-" if stdin_dockerfile else str(build.context / build.dockerfile), "--tag", tag]
    for label in labels:
        argv += ["--label", label]
    if pull:
        argv.append("--pull")
    for name, value in build.args:
        argv += ["--build-arg", f"{name}={value}"]
    argv.append(str(build.context))
    return argv


def build_step(build, image: str, digest: str, revision: str, release: str, pull: bool,
               layered: Layered | None = None) -> Run:
    """`docker buildx build --no-cache`: BuildKit, every layer new (the point: no stale layer).
    With `layered`, the code part only, `FROM` its dependency image. The image is tagged
    `unchecked-…`; `promote_step` gives it its real tags after the checks."""
    labels = [f"{LABEL_DIGEST}={digest}", f"{LABEL_REVISION}={revision}", f"{LABEL_RELEASE}={release}"]
    if layered is None:
        return Run(f"build {build.name} image {image} (no cache)",
                   _build_argv(build, unchecked(image), labels, pull, False), stream=True, timeout=1800)
    return Run(f"build {build.name} image {image} (code layers, no cache, on {layered.image})",
               _build_argv(build, unchecked(image), labels, False, True),
               stdin=layered.split.code_dockerfile(layered.image).encode(), stream=True, timeout=1800)


def dependency_step(build, layered: Layered) -> Run:
    """The dependency part alone, with no cache: the venv or node_modules and what the final
    stage does before the code, as an image named by the digest of its inputs. No `--pull`: the
    base is the one the digest names (`dependency_parts(refresh=True)` pulled it)."""
    return Run(f"build {build.name} dependency image {layered.image} (no cache)",
               _build_argv(build, layered.image, [f"{LABEL_DEPENDENCY_DIGEST}={layered.digest}"], False, True),
               stdin=layered.split.dependency_dockerfile.encode(), stream=True, timeout=1800)


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
                pull: bool | None = None, parts: dict | None = None) -> Plan:
    """Build what is missing (or everything with `rebuild`), then check it.

    `local` maps image reference -> `LocalImage`, for the images this machine already has. An image
    whose tag (the digest of its inputs) is present was built with no cache from these very inputs,
    so it is neither rebuilt nor re-checked unless `rebuild` is set. `parts` (`dependency_parts`)
    says which builds have a dependency image: it is built only when this machine lacks it (or
    with `rebuild`), and the code part on top of it every time the image is built.
    """
    plan = Plan("build")
    for name, info in sorted(release.builds.items()):
        build, image = env.builds[name], info["image"]
        have = local.get(image)
        if have is not None and have.labels.get(LABEL_DIGEST) == info["context_digest"] and not rebuild:
            continue
        should_pull = (not env.ship_images) if pull is None else pull
        layered = (parts or {}).get(name)
        if isinstance(layered, Layered):
            deps = local.get(layered.image)
            if rebuild or deps is None or deps.labels.get(LABEL_DEPENDENCY_DIGEST) != layered.digest:
                plan.add(dependency_step(build, layered))
            plan.add(build_step(build, image, info["context_digest"], revision, release.id, False, layered))
        else:
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
    tags: tuple = ()
    created: str = ""  # RFC 3339, as the engine gives it


def repository_images(repositories) -> list[LocalImage]:
    """Every image this machine has in these repositories (a read)."""
    try:
        client = docker.from_env()
    except docker.errors.DockerException:
        return []
    out: dict = {}
    repositories = set(repositories)
    try:
        for repo in sorted(repositories):
            for image in client.images.list(name=repo):
                a = image.attrs
                out[a["Id"]] = LocalImage(a["Id"], (a.get("Config") or {}).get("Labels") or {},
                                          tuple((a.get("RootFS") or {}).get("Layers") or ()),
                                          tuple(sorted(t for t in a.get("RepoTags") or ()
                                                       if t.rpartition(":")[0] in repositories)),
                                          a.get("Created", ""))
    except docker.errors.DockerException:
        return []
    finally:
        client.close()
    return list(out.values())


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
