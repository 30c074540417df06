"""What runs on the server: the current release and each service's state, health and image age.
Read through the facts (the releases on disk, the clock, the project's containers and images) in
one SSH round trip; the parsing is pure."""

from __future__ import annotations

from dataclasses import dataclass

from .facts import docker, host, release
from .facts.base import batch, parse_all, split
from .layout import Layout


@dataclass(frozen=True)
class ServiceState:
    service: str
    state: str
    health: str
    image: str
    image_age_days: float | None


def _facts(remote_dir: str, project: str):
    return (release.on_disk(Layout(remote_dir)), host.clock(), docker.containers(project), docker.images())


def status_argv(remote_dir: str, project: str) -> list[str]:
    """The one command (a batch of facts) whose output `parse_status` reads."""
    return batch(_facts(remote_dir, project))


def parse_status(output: str) -> tuple[str | None, list[ServiceState]]:
    """(the current release, each service's state) from the output of `status_argv`."""
    on_disk, now, containers, images = parse_all(_facts("/", "-"), split(output), check=False)
    states = []
    for c in containers:
        if c.oneoff:
            continue
        image = images.get(c.image_ref)
        made = image.created if image else None
        states.append(ServiceState(c.service, c.status, c.health or "-", c.image_ref,
                                   (now - made) / 86400 if made and now else None))
    return on_disk.current, sorted(states, key=lambda s: s.service)


def table(current: str | None, states: list[ServiceState]) -> str:
    lines = [f"current release: {current or 'none'}",
             f"{'service':10} {'state':10} {'health':10} {'image age':>10}  image"]
    for s in states:
        age = f"{s.image_age_days:.1f} d" if s.image_age_days is not None else "-"
        lines.append(f"{s.service:10} {s.state:10} {s.health:10} {age:>10}  {s.image}")
    return "\n".join(lines)
