"""Docker on the server: the project's containers (one `docker inspect`), the images and their
layers, and what `docker compose up` would do to the current release (its dry run)."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ..layout import CONFIG_HASH_LABEL, ONEOFF_LABEL, SERVICE_LABEL, compose_argv, project_filter
from ..ship import server_layers
from .base import Fact, Output, read, script


# -- containers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    container_port: str  # "6379/tcp"
    host_ip: str  # "" or "0.0.0.0" or "::" mean every address
    host_port: str

    @property
    def is_public(self) -> bool:
        if self.host_ip in ("", "0.0.0.0", "::"):
            return True
        try:
            ip = ipaddress.ip_address(self.host_ip)
        except ValueError:
            return True
        return not ip.is_loopback

    def __str__(self) -> str:
        host = self.host_ip or "0.0.0.0"
        return f"{host}:{self.host_port}->{self.container_port}"


@dataclass(frozen=True)
class Container:
    service: str
    name: str
    id: str
    image_ref: str  # Config.Image, the reference the container was created from
    image_id: str  # the image it actually runs
    status: str  # running, exited, restarting, paused, created, dead
    health: str | None  # healthy, unhealthy, starting, or None (no healthcheck)
    exit_code: int
    oom_killed: bool
    started_at: float | None
    restart_count: int
    restart_policy: str
    log_driver: str
    log_options: dict
    ports: tuple  # Port, from both the configured bindings and the live ones
    config_hash: str | None
    oneoff: bool = False
    user: str = ""  # Config.User: "" when the image's own user (root unless the image says otherwise)
    env: dict = field(default_factory=dict, repr=False, compare=False)  # holds secrets: never print

    @property
    def is_running(self) -> bool:
        return self.status == "running"

    @property
    def short_id(self) -> str:
        return self.id[:12]


def containers(project: str) -> Fact:
    """The fact: every container of the project, one-off ones (migrations, `compose run`) included
    and marked."""
    return script("containers.sh", *project_filter(project, oneoff=None), parse=parse_containers)


def parse_time(value: str) -> float | None:
    """Docker's RFC 3339 times (nanoseconds) -> unix seconds; None for the zero time."""
    if not value or value.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not m:
        return None
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    tz = timezone.utc
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        hh, mm = m.group(3)[1:].split(":")
        tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
    frac = float("0" + m.group(2)) if m.group(2) else 0.0
    return base.replace(tzinfo=tz).timestamp() + frac


def _ports(inspect: dict) -> tuple:
    found = set()
    bindings = (inspect.get("HostConfig") or {}).get("PortBindings") or {}
    live = (inspect.get("NetworkSettings") or {}).get("Ports") or {}
    for source in (bindings, live):
        for cport, binds in source.items():
            for b in binds or []:
                found.add(Port(cport, b.get("HostIp") or "", str(b.get("HostPort") or "")))
    return tuple(sorted(found, key=str))


def parse_containers(inspect_json: str) -> list[Container]:
    """`docker inspect` of the project's containers -> Container facts (one-off containers marked)."""
    out = []
    for c in json.loads(inspect_json or "[]"):
        config = c.get("Config") or {}
        labels = config.get("Labels") or {}
        state = c.get("State") or {}
        host = c.get("HostConfig") or {}
        log = host.get("LogConfig") or {}
        env = {}
        for item in config.get("Env") or []:
            k, _, v = item.partition("=")
            env[k] = v
        out.append(Container(
            service=labels.get(SERVICE_LABEL, "?"),
            name=(c.get("Name") or "").lstrip("/"),
            id=c.get("Id", ""),
            image_ref=config.get("Image", ""),
            image_id=c.get("Image", ""),
            status=state.get("Status", "unknown"),
            health=(state.get("Health") or {}).get("Status"),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=parse_time(state.get("StartedAt", "")),
            restart_count=int(c.get("RestartCount") or 0),
            restart_policy=(host.get("RestartPolicy") or {}).get("Name", ""),
            log_driver=log.get("Type", ""),
            log_options=dict(log.get("Config") or {}),
            ports=_ports(c),
            config_hash=labels.get(CONFIG_HASH_LABEL),
            oneoff=labels.get(ONEOFF_LABEL, "False").lower() == "true",
            user=config.get("User") or "",
            env=env,
        ))
    return out


# -- images and their layers --------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    ref: str  # "repo:tag"
    id: str  # "sha256:..."
    created: float | None  # unix time


def images() -> Fact:
    """The fact: every tagged image, {"repo:tag": Image}."""
    listing = ("docker", "image", "ls", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{.CreatedAt}}")
    return Fact("images", listing, lambda out: parse_images(out.text))


def parse_images(listing: str) -> dict[str, Image]:
    """`docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.CreatedAt}}'` lines
    (the date may be left out) -> {ref: Image}; untagged images are left out."""
    out = {}
    for line in listing.splitlines():
        ref, _, rest = line.strip().partition(" ")
        image_id, _, created = rest.partition(" ")
        if ref and image_id.startswith("sha256:") and "<none>" not in ref:
            out[ref] = Image(ref, image_id, _created(created))
    return out


def image_ids(listing: str) -> dict[str, str]:
    """The image listing -> {ref: id}."""
    return {ref: image.id for ref, image in parse_images(listing).items()}


def _created(text: str) -> float | None:
    """`2026-11-23 15:22:01 +0000 UTC` -> unix time."""
    try:
        return datetime.strptime(" ".join(text.split()[:3]), "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        return None


def layers() -> Fact:
    """The fact: the chain ID of every layer of every image on the server."""
    return script("layers.sh", parse=lambda text: server_layers(text.strip() or "[]"))


# -- what the smoke suite reads ------------------------------------------------------------------------


@dataclass
class DockerFacts:
    containers: list  # Container, one-off ones excluded
    images: dict  # ref -> image id

    def of(self, service: str) -> list:
        return [c for c in self.containers if c.service == service]

    def one(self, service: str):
        """The container serving `service` (the running one first, then the newest)."""
        found = self.of(service)
        if not found:
            return None
        return sorted(found, key=lambda c: (c.is_running, c.started_at or 0), reverse=True)[0]


def gather(connection, project: str) -> DockerFacts:
    """The project's containers (one-off ones left out) and the image ids, in one round trip."""
    found, listing = read(connection, containers(project), images(), what="the containers", more="docker ps -a")
    return DockerFacts([c for c in found if not c.oneoff], {ref: image.id for ref, image in listing.items()})


# -- compose's plan -----------------------------------------------------------------------------------


@dataclass
class ComposePlan:
    actions: dict  # container name -> what `compose up` would do (Running when up to date)
    output: str


_DRY_RUN = re.compile(r"^\s*DRY-RUN MODE -\s+Container\s+(\S+)\s+(\w+)")


def compose_plan(release_path: str) -> Fact:
    """What `docker compose up` would do with the release in `release_path` (the folder `current`
    resolves to: compose's labels name it), asked in dry-run mode (changes nothing). `config --hash`
    would be cheaper, but since Compose 2.22 it skips env_file and never matches the label of a
    service that has one (docker/compose#14001)."""
    argv = compose_argv(release_path, "--dry-run", "up", "--no-build", "-d")
    return Fact("compose_plan", tuple(argv), _plan_of, ok=None)


def _plan_of(out: Output) -> ComposePlan:
    text = f"{out.text}\n{out.errors}"
    return ComposePlan(parse_compose_plan(text), text.strip()[-500:])


def parse_compose_plan(text: str) -> dict[str, str]:
    """`docker compose --dry-run up` output -> {container name: the first thing compose would do}:
    `Running` means up to date; `Recreate`, `Create`, `Start` mean the container is not what the
    file describes."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _DRY_RUN.match(line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out
