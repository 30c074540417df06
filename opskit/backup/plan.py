"""The backup as a plan (steps as data): dump, manifest, off-site copy, retention.

    1. dump.sh on the server: `pg_dump -Fc` of the app database inside the postgres container
       (its own pg_dump: the server's version), as the superuser role over the container's local
       socket, in one exported snapshot with the census of its rows; sha256 and manifest beside it;
       built under a temp name and renamed whole (see dump.sh)
    2. restic: the repository is made if there is none
    3. restic backup of that one set, mounted at /backup, tagged release=, revision=, size=
    4. restic forget --prune: keep daily N, weekly M (restic's own policy)
    5. the server keeps its newest `keep_local` sets, and only once the copy is off the server

What it will not do: touch the release folders, the live database's data, or any secret file
(`credential_steps` writes those, separately).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from ..layout import Layout, compose_argv
from ..secrets import Secret
from ..steps import SERVER, Plan, Run, WriteFile
from . import restic
from .manifest import TAGS_FILE

HERE = Path(__file__).resolve().parent
STAMP = re.compile(r"^\d{8}T\d{6}Z$")  # 20261201T030000Z: sorts as it ages, a plain word everywhere
_RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# restic reads the set's tags file itself: the revision is only known once the dump is taken
_TAGGED = 'while IFS= read -r tag; do set -- "$@" --tag "$tag"; done < "$0"; exec "$@"'
_INIT = '"$@" cat config >/dev/null 2>&1 || exec "$@" init'
# the newest $2 sets stay (names are stamps: they sort by age); nothing else in the folder is touched
_PRUNE_LOCAL = ('cd "$1" && ls -1 | grep -E "^[0-9]{8}T[0-9]{6}Z$" | sort -r | tail -n +"$(($2 + 1))" | '
                'while IFS= read -r old; do rm -rf -- "$old" && echo "removed $old"; done')


@dataclass(frozen=True)
class Settings:
    """Where sets live on the server, how restic runs, how long things are kept, how psql is reached."""

    root: str  # the sets' folder (0700), outside the release folders
    access: restic.Access
    superuser_role: str
    database: str
    psql_prefix: tuple  # the command that runs a Postgres client inside the postgres container
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_local: int = 2
    keep_last: int = 0

    def __post_init__(self):
        object.__setattr__(self, "psql_prefix", tuple(self.psql_prefix))
        if not posixpath.isabs(self.root) or self.root.rstrip("/") == "":
            raise ValueError(f"backup folder must be an absolute path below /, not {self.root!r}")
        if self.keep_local < 1:
            raise ValueError("keep_local must be at least 1: the newest set stays on the server")

    def set_folder(self, stamp: str) -> str:
        return posixpath.join(self.root, stamp)


def folder(remote_dir: str) -> str:
    """The sets' folder for an environment: beside `releases/`, never inside a release."""
    return posixpath.join(Layout(remote_dir).root, "backups")


def psql_prefix(remote_dir: str, release_folder: str | None = None) -> tuple:
    """A Postgres client in the running postgres service (`-T`: binary-safe stdin and stdout, no
    terminal), through the current release's compose file, or `release_folder`'s (a deploy's
    backup before its migration, when `current` may not exist yet)."""
    return tuple(compose_argv(release_folder or Layout(remote_dir).current, "exec", "-T", "postgres"))


def sql() -> bytes:
    """psql's input for the dump: the snapshot, pg_dump, the census, the end of the transaction."""
    return (HERE / "backup.sql").read_bytes() + (HERE / "census.sql").read_bytes() + b"COMMIT;\n"


def dump_step(settings: Settings, stamp: str, release: str) -> Run:
    if not STAMP.match(stamp):
        raise ValueError(f"backup stamp {stamp!r} is not like 20261201T030000Z")
    if not _RELEASE.match(release):
        raise ValueError(f"release id {release!r}: letters, digits, . _ - only")
    argv = ["sh", "-c", (HERE / "dump.sh").read_text(), "opskit-backup-dump", settings.root, stamp, release,
            settings.superuser_role, settings.database, *settings.psql_prefix]
    return Run(f"dump {settings.database} to {settings.set_folder(stamp)} (pg_dump -Fc, manifest, sha256)", argv,
               on=SERVER, stdin=sql(), timeout=3600)


def init_step(access: restic.Access) -> Run:
    argv = restic.container_argv(access, "sh", "-c", _INIT, "opskit-restic-init", *restic.restic_argv(access))
    return Run(f"restic repository {access.repository.url} ready (made when missing)", argv, on=SERVER, timeout=300)


def send_step(settings: Settings, stamp: str) -> Run:
    access = settings.access
    tags = posixpath.join(restic.SET_PATH, TAGS_FILE)
    command = restic.restic_argv(access, "backup", "--host", access.host, restic.SET_PATH)
    argv = restic.container_argv(access, "sh", "-c", _TAGGED, tags, *command,
                                 mounts=((settings.set_folder(stamp), restic.SET_PATH, "ro"),))
    return Run(f"restic backup {stamp} off the server", argv, on=SERVER, timeout=3600, stream=True)


def forget_step(settings: Settings) -> Run:
    args = restic.forget_args(settings.access, settings.keep_daily, settings.keep_weekly, settings.keep_last)
    last = f"last {settings.keep_last}, " if settings.keep_last else ""
    return Run(f"restic forget --prune (keep {last}daily {settings.keep_daily}, weekly {settings.keep_weekly})",
               restic.run_argv(settings.access, *args), on=SERVER, timeout=3600)


def prune_local_step(settings: Settings) -> Run:
    argv = ["sh", "-c", _PRUNE_LOCAL, "opskit-backup-prune", settings.root, str(settings.keep_local)]
    return Run(f"keep the newest {settings.keep_local} sets on the server", argv, on=SERVER, timeout=300)


def backup_plan(settings: Settings, stamp: str, release: str) -> Plan:
    """The whole backup; a failing step stops it (the runner's rule): no forget after a failed
    backup, no local set removed before the copy is off the server."""
    return Plan(f"db.backup {stamp}", [dump_step(settings, stamp, release), init_step(settings.access),
                                      send_step(settings, stamp), forget_step(settings),
                                      prune_local_step(settings)])


def credential_steps(access: restic.Access, password: Secret, ssh_key: Secret | None = None,
                     known_hosts: str | Secret | None = None, s3_credentials: Secret | None = None) -> list[WriteFile]:
    """The files restic's container mounts, each 0600: the repository password, the SFTP key and
    the pinned host key line (not secret, but nobody else's to change), or the S3 credentials."""
    steps = [WriteFile("restic repository password", access.password_file, password, mode=0o600)]
    if access.repository.kind == "sftp":
        if ssh_key is None or not known_hosts:
            raise ValueError("an SFTP repository needs its ssh key and the target's pinned host key")
        steps += [WriteFile("restic ssh key", access.ssh_key_file, ssh_key, mode=0o600),
                  WriteFile("restic target's pinned host key", access.known_hosts_file,
                            known_hosts.encode() if isinstance(known_hosts, str) else known_hosts, mode=0o600)]
    if access.repository.kind == "s3":
        if s3_credentials is None:
            raise ValueError("an S3 repository needs its credentials")
        steps.append(WriteFile("restic S3 credentials", access.s3_credentials_file, s3_credentials, mode=0o600))
    return steps


def snapshots_step(access: restic.Access) -> Run:
    """`restic snapshots --json` of this stack (read by `snapshots.parse`)."""
    return Run("restic snapshots", restic.run_argv(access, *restic.snapshots_args(access)), on=SERVER, timeout=300)


def check_step(access: restic.Access, read_data: bool = True) -> Run:
    """restic's own check of the repository; `read_data` reads and verifies every pack (slow on
    a large repository, and what finds a flipped byte)."""
    args = ["check", "--read-data"] if read_data else ["check"]
    return Run("restic check" + (" --read-data" if read_data else ""), restic.run_argv(access, *args), on=SERVER,
               timeout=7200)
