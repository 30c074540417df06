"""An environment's `backup:` section -> the Settings and Access the plans take (the bridge between
the inventory and opskit.backup; the only module here that reads an Environment)."""

from __future__ import annotations

import posixpath
import secrets as _random
import time

from ..errors import UsageError
from ..layout import Layout
from . import restic
from .plan import Settings, psql_prefix

#: the secret files restic mounts, in the server's secrets folder (0700, the deploy user's)
FILES = {"restic_password": "restic_password", "restic_ssh_key": "restic_ssh_key",
         "restic_known_hosts": "restic_known_hosts", "restic_s3_credentials": "restic_s3_credentials"}


def access(env) -> restic.Access:
    if env.backup is None:
        raise UsageError(f"environment {env.name} has no `backup:` section: nothing to back up to")
    secrets_dir = Layout(env.remote_dir).secrets
    path = {name: posixpath.join(secrets_dir, file) for name, file in FILES.items()}
    repo = restic.repository(env.backup.repository)
    if repo.kind == "s3":
        return restic.Access(repo, env.project, path["restic_password"],
                             s3_credentials_file=path["restic_s3_credentials"], image=env.backup.image)
    return restic.Access(repo, env.project, path["restic_password"], path["restic_ssh_key"], path["restic_known_hosts"],
                         image=env.backup.image)


def settings(env, release_folder: str | None = None) -> Settings:
    b = env.backup
    return Settings(Layout(env.remote_dir).backups, access(env), env.postgres.superuser_role, env.postgres.database,
                    psql_prefix(env.remote_dir, release_folder), keep_daily=b.keep_daily, keep_weekly=b.keep_weekly,
                    keep_last=b.keep_last,
                    keep_local=b.keep_local)


def stamp(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def drill_id() -> str:
    return _random.token_hex(4)
