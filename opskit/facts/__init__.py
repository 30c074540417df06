"""What opskit reads from a server: one module per noun, each fact a probe (a script or SQL file
beside its module) and a pure parser to a dataclass (pyinfra's `facts/` shape).

    host       Docker and Compose versions, disk and inodes, clock and time sync, TCP listeners
    sshd       sshd's config files and their effective settings
    docker     the project's containers, images and their layers, compose's dry-run plan
    release    `current`, the releases on disk, the lock, the current release in detail
    caddy      the running config, the local CA's root, Caddyfiles
    postgres   roles, grants, Alembic, connections; what the UI role may do
    redis      answers without and with the password
    celery     the probe program in the api container (workers, beat, a task's round trip)
    logs       lines of the containers' logs that known incidents leave behind
    base       what a fact is, and how several are read in one SSH round trip

Deploy, status and the smoke suite read the server through these. This module holds what the
deploy plans from (`ServerFacts`, read by `gather_deploy` in one round trip).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..layout import Layout
from . import docker, host, release
from .base import Fact, Output, batch, parse_all, read, split
from .release import Lock

__all__ = ["Fact", "Lock", "Output", "ServerFacts", "batch", "deploy_facts", "gather_deploy", "parse_deploy", "read",
           "split"]


@dataclass(frozen=True)
class ServerFacts:
    docker: str | None
    compose: str | None
    disk_free_mb: int | None
    current: str | None  # release id the `current` link points at
    releases: tuple = ()  # release ids on disk, oldest first
    lock: Lock | None = None
    images: frozenset = frozenset()  # "repo:tag" references present
    layers: frozenset = field(default=frozenset(), repr=False)  # chain IDs of every layer present
    now: float = 0.0  # the server's clock, for lock ages
    containers: tuple = ()  # docker.Container of the project (services, one-off runs apart)
    caddy_files: dict = field(default_factory=dict)  # Caddy's config folder: file name -> sha256


def deploy_facts(layout: Layout, project: str = "") -> tuple[Fact, ...]:
    """What a deploy plans from: versions, free disk, the clock, the releases on disk and the lock,
    the images and their layers, the project's containers."""
    return (host.versions(), host.space(layout), host.clock(), release.on_disk(layout), docker.images(),
            docker.layers(), docker.containers(project))


def _server_facts(versions, room, now, on_disk, images, layers, containers) -> ServerFacts:
    return ServerFacts(docker=versions.docker, compose=versions.compose, disk_free_mb=room.free_mb,
                       current=on_disk.current, releases=on_disk.releases, lock=on_disk.lock,
                       images=frozenset(images), layers=layers, now=now or 0.0,
                       containers=tuple(c for c in containers or () if not c.oneoff),
                       caddy_files=dict(on_disk.caddy_files))


def gather_deploy(connection, env) -> ServerFacts:
    """The deploy's facts, in one SSH round trip. Reads only."""
    facts = deploy_facts(Layout(env.remote_dir), env.project)
    return _server_facts(*read(connection, *facts, timeout=120, check=False))


def parse_deploy(output: str) -> ServerFacts:
    """The output of `batch(deploy_facts(...))` -> ServerFacts (pure: for tests)."""
    facts = deploy_facts(Layout("/"), "p")
    return _server_facts(*parse_all(facts, split(output), check=False))
