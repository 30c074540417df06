"""The inventory's typed, frozen values: what every other module reads instead of raw YAML."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import ROOT, values

APP_SERVICES = ("api", "worker", "beat", "flower", "frontend")
# the worker's stop: Celery's soft shutdown lets running tasks finish for (grace - margin), then
# requeues what is still running (late acks) before Docker's SIGKILL at the grace period
WORKER_DEFAULT_GRACE = values.Duration(30_000)
WORKER_STOP_MARGIN = values.Duration(5_000)
WORKER_MIN_GRACE = values.Duration(10_000)
MAX_GRACE = values.Duration(3_600_000)
OFFICIAL_IMAGES = ("postgres", "redis", "caddy")
LANGUAGES = ("python", "node")


@dataclass(frozen=True)
class Target:
    """Where the server is and how to prove who we are and who it is."""

    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def expand(path: str | os.PathLike, base: Path) -> Path:
    """A path from the inventory: ~ expanded, relative paths taken from the repository root."""
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (base / p)


@dataclass(frozen=True)
class Domains:
    app: str
    api: str
    flower: str

    def items(self):
        return (("app", self.app), ("api", self.api), ("flower", self.flower))


@dataclass(frozen=True)
class TLS:
    mode: str  # "acme" or "internal"
    email: str | None = None
    acme_ca: str | None = None  # an ACME directory other than Let's Encrypt's (staging, Pebble in tests)
    acme_ca_root: Path | None = None  # where the CA root of `acme_ca`'s HTTPS came from (this machine)
    acme_ca_root_pem: str | None = None  # its certificates, read at parse time: the render ships them

    @property
    def is_acme(self) -> bool:
        return self.mode == "acme"


#: The Content-Security-Policy of each site unless the inventory's `csp:` sets one (README: csp).
#: api: JSON and Server-Sent Events only; nothing in it is a page to render, frame or script.
#: flower: what Flower's pages load (flower/templates/base.html): its own /static js, css and
#: favicon, inline <script> blocks (workers.html sets `autorefresh`) and style attributes, Bootstrap's
#: data: SVG icons, and its own XHR/WebSocket updates.
#: app: a Next.js app without nonces: its own chunks, plus 'unsafe-inline' because Next inlines its
#: hydration data (`self.__next_f.push(...)` scripts) and style tags; images may be data:/blob:.
DEFAULT_CSP = {
    "app": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
           "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
           "base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
    "api": "default-src 'none'; frame-ancestors 'none'",
    "flower": "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
              "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
              "form-action 'self'; frame-ancestors 'none'",
}


@dataclass(frozen=True)
class CSP:
    """The Content-Security-Policy Caddy sends on every answer of each site."""

    app: str = DEFAULT_CSP["app"]
    api: str = DEFAULT_CSP["api"]
    flower: str = DEFAULT_CSP["flower"]

    def items(self):
        return (("app", self.app), ("api", self.api), ("flower", self.flower))


@dataclass(frozen=True)
class Build:
    """An image built from source with no cache, then checked by importing modules inside it."""

    name: str
    context: Path
    dockerfile: str
    language: str
    repository: str
    args: tuple  # ((name, value), ...) sorted
    import_checks: tuple


@dataclass(frozen=True)
class Service:
    """An app process: which build it runs, its command, healthcheck and port, and how long it
    may take to stop before Docker kills it (None: Docker's 10 s)."""

    name: str
    build: str
    command: tuple | None
    healthcheck: tuple
    port: int | None
    stop_grace_period: values.Duration | None = None


@dataclass(frozen=True)
class Postgres:
    database: str
    admin_role: str
    ui_role: str
    publish_host: str
    publish_port: int
    admin_connection_limit: int
    ui_connection_limit: int
    superuser_role: str = "postgres"  # the bootstrap superuser: opskit's role step only, never an app

    @property
    def publish(self) -> str:
        return f"{self.publish_host}:{self.publish_port}"


@dataclass(frozen=True)
class SSE:
    read_timeout: values.Duration
    heartbeat: values.Duration
    stream_close_delay: values.Duration


@dataclass(frozen=True)
class Resources:
    memory: str
    cpus: float


@dataclass(frozen=True)
class Logging:
    max_size: str
    max_files: int


@dataclass(frozen=True)
class Smoke:
    """What the smoke suite accepts as healthy (thresholds live here, not in the tests)."""

    min_free_disk_mb: int
    min_free_inodes_percent: int
    max_db_connections_percent: int
    task_roundtrip: values.Duration
    max_restarts: int
    max_clock_skew: values.Duration


@dataclass(frozen=True)
class Vps:
    """The simulated VPS (a local container); only an environment that has one sets this."""

    container: str
    image: str
    http_port: int
    https_port: int


@dataclass(frozen=True)
class Backup:
    """Where dumps go off the server and how long they stay (`backup:`); credentials are secrets
    by reference (restic_password, restic_ssh_key, restic_known_hosts)."""

    repository: str  # sftp:USER@HOST:/PATH, sftp://USER@HOST:PORT//PATH or s3:HOST/BUCKET/PATH
    schedule: str = "*-*-* 03:15:00"  # systemd OnCalendar
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_last: int = 10  # the newest N as well, whatever their day (a pre-migration backup among them)
    keep_local: int = 2
    max_age: values.Duration = values.Duration(26 * 3600 * 1000)  # the smoke check's limit
    image: str = "opskit/restic:0.14"

    @property
    def kind(self) -> str:
        """`s3` or `sftp`: which credentials the repository takes."""
        return "s3" if self.repository.startswith("s3:") else "sftp"


@dataclass(frozen=True)
class Environment:
    name: str
    ssh: Target
    remote_dir: str
    keep_releases: int
    project: str
    domains: Domains
    tls: TLS
    images: dict  # official service -> image reference
    ship_images: bool
    registry: str | None  # built images go through it (push here, pull there) instead of over SSH
    builds: dict  # name -> Build
    services: dict  # name -> Service
    postgres: Postgres
    sse: SSE
    beat_interval: values.Duration
    flower_user: str
    resources: dict  # service -> Resources
    logging: Logging
    smoke: Smoke
    secrets: dict = field(repr=False)  # name -> Secret (empty until resolved)
    vps: Vps | None = None
    provision: object = None  # inventory.provisioning.Provision
    root: Path = ROOT
    secret_refs: dict = field(default_factory=dict, repr=False)  # name -> "env:VAR" or "file:KEY"
    secrets_file: Path | None = None
    generate_secrets: bool = False  # the simulated VPS only: `sim.secrets` fills the file
    csp: CSP = field(default_factory=CSP)  # per site; every default is in DEFAULT_CSP
    backup: Backup | None = None  # no `backup:` section: no backups (and no backup secrets asked for)
