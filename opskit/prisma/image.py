"""A built image, read through the docker SDK: its config (ENTRYPOINT, CMD, WORKDIR, PATH) and the
files the walker asks for, from a container that is created and never started (so it works for any
image, `FROM scratch` too: nothing inside the image is executed).

Will not touch: the image itself; the throw-away container is labelled `CONTAINER_LABEL` and removed.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass

import docker
import docker.errors

from ..errors import GuardError

CONTAINER_LABEL = "opskit.prisma-guard"  # on the throw-away containers, to find any left behind
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Go's os.ModeSymlink in the `mode` of the engine's path stat
_MODE_SYMLINK = 1 << 27


def engine():
    """A client of the local engine (DOCKER_HOST or its socket, as the docker CLI finds it)."""
    try:
        return docker.from_env(timeout=120)
    except docker.errors.DockerException as exc:
        raise GuardError(f"no Docker engine answers here ({exc}); the prisma guard needs one to read the "
                         "frontend image (scripts/setup-docker.sh)") from None


@dataclass(frozen=True)
class ImageConfig:
    image: str
    entrypoint: tuple
    cmd: tuple
    workdir: str
    path: tuple  # PATH of the image, to find an entrypoint script named without a folder


def inspect_image(image: str, client) -> ImageConfig:
    try:
        config = client.images.get(image).attrs.get("Config") or {}
    except docker.errors.DockerException as exc:
        raise GuardError(f"cannot inspect image {image}: {_why(exc)} (build it first)") from None
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    path = env.get("PATH", DEFAULT_PATH)
    return ImageConfig(image, tuple(config.get("Entrypoint") or ()), tuple(config.get("Cmd") or ()),
                       config.get("WorkingDir") or "/", tuple(p for p in path.split(":") if p))


def _why(exc) -> str:
    return getattr(exc, "explanation", None) or str(exc)


class ImageFiles:
    """Reads files of an image from a created, never started, container. Use as a context manager."""

    MAX_BYTES = 1_000_000

    def __init__(self, config: ImageConfig, client):
        self.config, self.client, self.container = config, client, None

    def __enter__(self) -> "ImageFiles":
        try:
            self.container = self.client.containers.create(
                self.config.image, entrypoint=["/opskit-prisma-guard-never-started"], network_mode="none",
                labels={CONTAINER_LABEL: "1"})
        except docker.errors.DockerException as exc:
            raise GuardError(f"cannot create a container of {self.config.image} to read its files: "
                             f"{_why(exc)}") from None
        return self

    def __exit__(self, *exc) -> None:
        if self.container is not None:
            self.container.remove(force=True)

    def _archive(self, path: str) -> bytes | None:
        """The tar of a path, a symlink followed as `docker cp --follow-link` does; None when it
        is not there."""
        try:
            stream, stat = self.container.get_archive(path)
            if stat.get("mode", 0) & _MODE_SYMLINK and stat.get("linkTarget"):
                b"".join(stream)  # the link's own small tar, read to the end so the connection is free again
                # the engine resolves the whole link chain; a relative target is from the link's folder
                target = posixpath.join(posixpath.dirname(path.rstrip("/")), stat["linkTarget"])
                stream, stat = self.container.get_archive(target)
            return b"".join(stream)
        except docker.errors.APIError:
            return None

    def file(self, path: str) -> str | None:
        """The text of a regular file (symlinks followed), None if absent, binary or too big."""
        archive = self._archive(path)
        if archive is None:
            return None
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            if member is None or member.size > self.MAX_BYTES:
                return None
            data = tar.extractfile(member).read()
        if b"\x00" in data[:4096]:
            return None
        return data.decode("utf-8", errors="replace")

    def program(self, name: str) -> str | None:
        """A script the image would run as `name`: a path (from WORKDIR), or looked up in PATH."""
        if "/" in name:
            return self.file(posixpath.join(self.config.workdir, name))
        for folder in self.config.path:
            text = self.file(posixpath.join(folder, name))
            if text is not None:
                return text
        return None
