"""What runs on the server: the current release, each service's state, health and image age, and
(for an ACME environment) each domain whose certificate Caddy could not get, with Caddy's reason.
Read through the facts (the releases on disk, the clock, the project's containers and images,
Caddy's certificate log lines) in one SSH round trip; the parsing is pure."""

from __future__ import annotations

from dataclasses import dataclass

from .facts import acme, docker, host, release
from .facts.base import batch, parse_all, split
from .layout import Layout


@dataclass(frozen=True)
class ServiceState:
    service: str
    state: str
    health: str
    image: str
    image_age_days: float | None


@dataclass(frozen=True)
class Status:
    current: str | None
    services: list[ServiceState]
    #: {domain: Caddy's reason} of each certificate Caddy could not get; None: not an ACME
    #: environment, or Caddy's log could not be read (`certificates_unread` says why)
    certificate_failures: dict | None = None
    certificates_unread: str = ""


def _facts(remote_dir: str, project: str, with_acme: bool):
    return (release.on_disk(Layout(remote_dir)), host.clock(), docker.containers(project), docker.images(),
            *((acme.failures(project),) if with_acme else ()))


def status_argv(remote_dir: str, project: str, with_acme: bool = False) -> list[str]:
    """The one command (a batch of facts) whose output `parse_status` reads; `with_acme` (a
    `tls.mode: acme` environment) adds Caddy's certificate log lines."""
    return batch(_facts(remote_dir, project, with_acme))


def parse_status(output: str, with_acme: bool = False) -> Status:
    """The status, from the output of `status_argv` (given the same `with_acme`)."""
    found = split(output)
    on_disk, now, containers, images, *certificates = parse_all(_facts("/", "-", with_acme), found, check=False)
    states = []
    for c in containers:
        if c.oneoff:
            continue
        image = images.get(c.image_ref)
        made = image.created if image else None
        states.append(ServiceState(c.service, c.status, c.health or "-", c.image_ref,
                                   (now - made) / 86400 if made and now else None))
    failures, unread = None, ""
    if with_acme:
        out = found.get(acme.failures("-").name)
        if out is not None and out.returncode == 0 and isinstance(certificates[0], dict):
            failures = certificates[0]
        else:  # never "no failure" from a log that was not read
            code = out.returncode if out is not None else -1
            unread = {3: "no caddy container is running", -1: "the connection dropped"}.get(code, f"exit {code}")
    return Status(on_disk.current, sorted(states, key=lambda s: s.service), failures, unread)


def table(status: Status) -> str:
    lines = [f"current release: {status.current or 'none'}",
             f"{'service':10} {'state':10} {'health':10} {'image age':>10}  image"]
    for s in status.services:
        age = f"{s.image_age_days:.1f} d" if s.image_age_days is not None else "-"
        lines.append(f"{s.service:10} {s.state:10} {s.health:10} {age:>10}  {s.image}")
    if status.certificates_unread:
        lines.append(f"certificates: unknown, Caddy's log could not be read ({status.certificates_unread})")
    elif status.certificate_failures == {}:
        lines.append("certificates: no failed ACME attempt in Caddy's log")
    elif status.certificate_failures:
        lines.append("certificates: Caddy could not get these (its latest attempt failed):")
        lines += [f"  {domain}: {reason}" for domain, reason in status.certificate_failures.items()]
    return "\n".join(lines)
