"""Where things live on the server, and how to name the project's containers there.

The one description of the server's layout: releases, the `current` link, the deploy lock,
the shared folders that containers mount, the compose argv of a release, the project's container
filter. Deploy, status, the facts, the smoke suite and the tests all ask here.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

COMPOSE_FILE = "docker-compose.yml"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
#: what a lock folder holds: one JSON line naming its holder
LOCK_INFO = "info"


@dataclass(frozen=True)
class Layout:
    """The folders and files under the inventory's `remote_dir`."""

    root: str

    @property
    def releases(self) -> str:
        return posixpath.join(self.root, "releases")

    def release(self, release_id: str) -> str:
        return posixpath.join(self.releases, release_id)

    def partial(self, release_id: str) -> str:
        """Where a release is uploaded before one rename makes it whole."""
        return self.release(release_id) + ".partial"

    @property
    def current(self) -> str:
        """A symlink `current -> releases/<id>`: the release the server serves."""
        return posixpath.join(self.root, "current")

    @property
    def lock(self) -> str:
        return posixpath.join(self.root, "deploy.lock")

    @property
    def lock_info(self) -> str:
        return posixpath.join(self.lock, LOCK_INFO)

    @property
    def caddy(self) -> str:
        """Caddy's config folder, mounted by the caddy container; it stays put from release to
        release, so a deploy that changes nothing there recreates no container (a reload instead)."""
        return posixpath.join(self.root, "caddy")

    @property
    def postgres_init(self) -> str:
        """Postgres's first-boot scripts, mounted by the postgres container."""
        return posixpath.join(self.root, "postgres-init")

    @property
    def secrets(self) -> str:
        """The secret files that containers mount (`/run/secrets/<name>`), copied from the current
        release: a path that outlives each release folder, since Docker looks a bind mount's
        source up again at every container restart. Mode 0700, the deploy user's."""
        return posixpath.join(self.root, "secrets")

    @property
    def backups(self) -> str:
        """The backup sets (`<stamp>/`: dump, sha256, manifest), mode 0700, beside the releases and
        never inside one: a release folder is removed by a later deploy's prune."""
        return posixpath.join(self.root, "backups")

    @property
    def backup_script(self) -> str:
        """The script the scheduled backup runs (`opskit-backup.service`), written by the deploy."""
        return posixpath.join(self.backups, "bin", "backup.sh")

    def shared(self) -> dict[str, str]:
        """The folders containers mount, by the name the templates use."""
        return {"caddy": self.caddy, "postgres_init": self.postgres_init, "secrets": self.secrets}


def compose_argv(folder: str, *args: str) -> list[str]:
    """`docker compose` for the release in `folder` (the project name comes from its file)."""
    return ["docker", "compose", "--project-directory", folder, "-f", posixpath.join(folder, COMPOSE_FILE), *args]


def project_compose_argv(project: str, *args: str) -> list[str]:
    """`docker compose` for the project by name (no file needed: for hints to a person)."""
    return ["docker", "compose", "-p", project, *args]


def project_filter(project: str, service: str | None = None, oneoff: bool | None = False) -> list[str]:
    """`docker ps` filter arguments for the project's containers (one-off ones left out unless
    `oneoff` is None, which keeps both kinds)."""
    argv = ["--filter", f"label={PROJECT_LABEL}={project}"]
    if service is not None:
        argv += ["--filter", f"label={SERVICE_LABEL}={service}"]
    if oneoff is not None:
        argv += ["--filter", f"label={ONEOFF_LABEL}={'True' if oneoff else 'False'}"]
    return argv
