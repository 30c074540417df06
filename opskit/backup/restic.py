"""restic's argv, and the container it runs in on the server: pure builders, no connection.

The repository password reaches restic only as a file (`RESTIC_PASSWORD_FILE`, a 0600 file
mounted read-only): never in argv, where `ps` shows it, nor as an environment value, which
`docker inspect` and /proc/PID/environ show. An SFTP repository is reached by an ssh that pins the
target's host key (its own known_hosts, `StrictHostKeyChecking=yes`: a changed or unknown key is
refused, never learnt), logs in with its own key only and never asks a question (`BatchMode`).
An S3 repository reads its keys from a mounted credentials file (`AWS_SHARED_CREDENTIALS_FILE`).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..errors import OpskitError

IMAGE = "opskit/restic:0.14"
#: where the container finds what the server keeps in its secrets folder
PASSWORD_PATH = "/run/secrets/restic-password"
SSH_KEY_PATH = "/run/secrets/restic-ssh-key"
KNOWN_HOSTS_PATH = "/etc/opskit/restic-known-hosts"
S3_CREDENTIALS_PATH = "/run/secrets/restic-s3-credentials"
CACHE_PATH = "/var/cache/restic"
#: where a backup set is mounted: one fixed path, so every snapshot is in one forget group
SET_PATH = "/backup"

# sftp:user@host:/path (restic's short form) or sftp://user@host:port//path (its URL form)
_SFTP_SHORT = re.compile(r"^sftp:(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+):(?P<path>/?[^\s:'\"\\]*)$")
_SFTP_URL = re.compile(r"^sftp://(?P<user>[A-Za-z0-9._-]+)@(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?/"
                       r"(?P<path>[^\s'\"\\]*)$")
_S3 = re.compile(r"^s3:(?:https?://)?[A-Za-z0-9.-]+(?::\d{1,5})?/[A-Za-z0-9._/-]+$")
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RepositoryError(OpskitError, ValueError):
    """A repository URL restic would not take, or that cannot be reached the way we insist on."""


@dataclass(frozen=True)
class Repository:
    url: str  # what restic gets as -r
    kind: str  # "sftp" or "s3"
    user: str | None = None
    host: str | None = None
    port: int = 22
    path: str = ""


def repository(url: str) -> Repository:
    """Parse a repository URL: `sftp:user@host:/path`, `sftp://user@host:23//path`, or
    `s3:host/bucket/path` (`s3:https://host/bucket`). Anything else is refused by name."""
    found = _SFTP_SHORT.match(url)
    if found:
        if not found["path"].strip("/"):
            raise RepositoryError(f"backup.repository: {url!r} names no folder on the SFTP server")
        return Repository(url, "sftp", found["user"], found["host"], 22, found["path"])
    found = _SFTP_URL.match(url)
    if found:
        port = int(found["port"] or 22)
        if not 0 < port < 65536 or not found["path"].strip("/"):
            raise RepositoryError(f"backup.repository: {url!r} needs a port 1-65535 and a folder")
        return Repository(url, "sftp", found["user"], found["host"], port, found["path"])
    if _S3.match(url):
        return Repository(url, "s3")
    raise RepositoryError(f"backup.repository: {url!r} is not `sftp:USER@HOST:/PATH`, "
                          "`sftp://USER@HOST:PORT//PATH` or `s3:HOST/BUCKET/PATH`")


@dataclass(frozen=True)
class Access:
    """How restic runs on the server: the image, and the server's files it mounts (paths only).

    `host` is the name snapshots are filed under (restic's --host): the project, not the
    container's random hostname, so forget's groups and `latest` mean this stack."""

    repository: Repository
    host: str
    password_file: str
    ssh_key_file: str | None = None
    known_hosts_file: str | None = None
    s3_credentials_file: str | None = None
    image: str = IMAGE
    network: str | None = None  # docker network of the container (None: the default bridge)
    cache_volume: str | None = "opskit-restic-cache"  # None: --no-cache

    def __post_init__(self):
        if not _PLAIN.match(self.host):
            raise RepositoryError(f"backup host name {self.host!r}: letters, digits, . _ - only")
        if self.repository.kind == "sftp" and not (self.ssh_key_file and self.known_hosts_file):
            raise RepositoryError("an SFTP repository needs an ssh key file and a pinned known_hosts file")
        if self.repository.kind == "s3" and not self.s3_credentials_file:
            raise RepositoryError("an S3 repository needs a credentials file")


def ssh_argv(repo: Repository, key_file: str = SSH_KEY_PATH, known_hosts: str = KNOWN_HOSTS_PATH) -> list[str]:
    """ssh as restic's SFTP transport: the pinned key only, no prompt, no user or system config."""
    return ["ssh", "-F", "none", "-i", key_file, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no", "-o", "BatchMode=yes",
            "-o", "PasswordAuthentication=no", "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=4",
            "-p", str(repo.port), "-l", repo.user, repo.host, "-s", "sftp"]


def restic_argv(access: Access, *args: str) -> list[str]:
    """`restic -r URL [-o sftp.command=...] ARGS` as it runs inside the container."""
    argv = ["restic", "--repo", access.repository.url]
    if access.repository.kind == "sftp":
        # restic splits this itself (shell-like); every part is a plain word or a path we chose
        argv += ["--option", f"sftp.command={shlex.join(ssh_argv(access.repository))}"]
    argv += ["--no-cache"] if access.cache_volume is None else ["--cache-dir", CACHE_PATH]
    return argv + list(args)


def container_argv(access: Access, *command: str, mounts: tuple = (), stdin: bool = False) -> list[str]:
    """`docker run --rm ... IMAGE COMMAND`: the password, key, known_hosts (and S3 keys) mounted
    read-only from the server's files, their container paths in RESTIC_* variables (paths, never
    values). `mounts` are more (server path, container path, "ro"|"rw") triples."""
    # no entrypoint, whatever the image sets (the official restic/restic has `restic` as its own):
    # the command names its program, `restic` or `sh`
    argv = ["docker", "run", "--rm", "--log-driver", "none", "--entrypoint", ""]
    if stdin:
        argv.append("--interactive")
    if access.network:
        argv += ["--network", access.network]
    argv += ["--env", f"RESTIC_PASSWORD_FILE={PASSWORD_PATH}", *_mount(access.password_file, PASSWORD_PATH)]
    if access.repository.kind == "sftp":
        argv += [*_mount(access.ssh_key_file, SSH_KEY_PATH), *_mount(access.known_hosts_file, KNOWN_HOSTS_PATH)]
    if access.repository.kind == "s3":
        argv += ["--env", f"AWS_SHARED_CREDENTIALS_FILE={S3_CREDENTIALS_PATH}",
                 *_mount(access.s3_credentials_file, S3_CREDENTIALS_PATH)]
    if access.cache_volume:
        argv += ["--volume", f"{access.cache_volume}:{CACHE_PATH}"]
    for source, target, mode in mounts:
        argv += _mount(source, target, mode)
    return argv + [access.image, *command]


def run_argv(access: Access, *args: str, mounts: tuple = ()) -> list[str]:
    """restic ARGS in its container: what a step runs on the server."""
    return container_argv(access, *restic_argv(access, *args), mounts=mounts)


def _mount(source: str, target: str, mode: str = "ro") -> list[str]:
    # --mount, not -v: a missing source (no password file yet) fails the step instead of Docker
    # making an empty folder in its place
    if not source or not source.startswith("/") or "," in source or "," in target:
        raise RepositoryError(f"a mounted path must be absolute and hold no comma: {source!r}")
    spec = f"type=bind,source={source},target={target}"
    return ["--mount", spec + (",readonly" if mode == "ro" else "")]


# -- the subcommands the plans use ------------------------------------------------------------------


def host_filter(access: Access) -> list[str]:
    return ["--host", access.host, "--path", SET_PATH]


def forget_args(access: Access, keep_daily: int, keep_weekly: int, keep_last: int = 0) -> list[str]:
    """restic's own retention over this stack's snapshots, and the prune that frees the space.
    `keep_last` keeps the newest N whatever their day: keep-daily alone keeps one per day, so a
    deploy's pre-migration backup would go at the next backup of the same day."""
    if keep_daily < 1 or keep_weekly < 0 or keep_last < 0:
        raise ValueError("keep daily must be >= 1, keep weekly and keep last >= 0")
    last = ["--keep-last", str(keep_last)] if keep_last else []
    return ["forget", "--host", access.host, "--group-by", "host,paths", *last, "--keep-daily", str(keep_daily),
            "--keep-weekly", str(keep_weekly), "--prune"]


def snapshots_args(access: Access) -> list[str]:
    return ["snapshots", "--json", *host_filter(access)]
