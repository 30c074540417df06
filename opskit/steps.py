"""The step types: every side effect is first one of these plain, printable values.

A plan is a list of steps. Nothing here touches the world; `runner.py` does.
Secrets inside a step print as ``***`` (see `secrets.Secret`).

Each step of a deploy or rollback carries its `Phase`; what a failure must undo is decided from
the phase it reached (see `deploy.recovery_for`), never from a step's title.
"""

from __future__ import annotations

import dataclasses
import enum
import shlex
from dataclasses import dataclass, field

from .secrets import Secret

LOCAL = "local"
SERVER = "server"


class Phase(enum.IntEnum):
    """Where a step sits in a deploy, in order. A failure in a phase leaves the server as:"""

    NONE = 0  # not part of a deploy (kit, vps, db tasks): no recovery
    BUILD = 1  # images built and checked here: the server is untouched
    LOCK = 2  # the deploy lock: once it is taken, every failure must give it back
    SHIP = 3  # images and the release folder reach the server: the old release still serves
    CONFIG = 4  # shared config, databases, roles, migrations: the old release may need restarting
    START = 5  # the new containers start and take traffic
    FINISH = 6  # `current` moves, old releases go, the lock is given back


def _shown(part) -> str:
    if isinstance(part, Secret):
        return str(part)
    text = str(part)
    if "\n" in text.strip():  # an inline script: its size, not its body, keeps plans readable
        return f"<{text.strip().count(chr(10)) + 1}-line script>"
    return shlex.quote(text)


@dataclass(frozen=True)
class Run:
    """Run one program, here (`on=LOCAL`) or on the server (`on=SERVER`), with argv as a list.

    `stdin` feeds the program (the way secrets reach a remote command, never its argv).
    `stream` prints output lines as they come, for long steps a person wants to follow.
    """

    title: str
    argv: tuple
    on: str = LOCAL
    stdin: bytes | Secret | None = None
    env: tuple = ()  # ((name, value), ...); values may be Secret; local only
    cwd: str | None = None
    timeout: float | None = None
    stream: bool = False
    phase: Phase = Phase.NONE

    def __post_init__(self):
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "env", tuple(self.env))
        if self.on not in (LOCAL, SERVER):
            raise ValueError(f"Run.on must be {LOCAL!r} or {SERVER!r}, not {self.on!r}")
        if self.env and self.on == SERVER:
            raise ValueError("server commands take secrets on stdin, not in their environment")

    def command_line(self) -> str:
        env = " ".join(f"{k}={_shown(v)}" for k, v in self.env)
        cmd = " ".join(_shown(a) for a in self.argv)
        return f"{env} {cmd}" if env else cmd

    def describe(self) -> str:
        where = "server" if self.on == SERVER else "local"
        feed = " <stdin" if self.stdin is not None else ""
        return f"{self.title} [{where}] $ {self.command_line()}{feed}"


@dataclass(frozen=True)
class WriteFile:
    """Write a file atomically (temp file, mode, rename), here or on the server."""

    title: str
    path: str
    content: bytes | Secret
    mode: int = 0o644
    on: str = SERVER
    phase: Phase = Phase.NONE

    def describe(self) -> str:
        size = "secret content" if isinstance(self.content, Secret) else f"{len(self.content)} bytes"
        where = "server" if self.on == SERVER else "local"
        return f"{self.title} [{where}] write {self.path} (mode {self.mode:04o}, {size})"


@dataclass(frozen=True)
class Check:
    """A read-only probe that must succeed: runs argv and, with `expect`, looks for it in stdout."""

    title: str
    argv: tuple
    on: str = SERVER
    expect: str | None = None
    hint: str = ""
    phase: Phase = Phase.NONE

    def __post_init__(self):
        object.__setattr__(self, "argv", tuple(self.argv))

    def describe(self) -> str:
        cmd = " ".join(_shown(a) for a in self.argv)
        return f"{self.title} [{self.on}] check $ {cmd}"


@dataclass(frozen=True)
class ShipImage:
    """Send one image to the server, leaving out the layers whose chain IDs are in `skip`
    (see `ship.py`: `docker save` here, `docker load` there, over the SSH connection)."""

    title: str
    image: str
    skip: frozenset = frozenset()
    phase: Phase = Phase.NONE
    margin_mb: int = 0  # free space the server keeps beyond what the new layers take

    def describe(self) -> str:
        return (f"{self.title} [local -> server] docker save {self.image} | "
                f"(minus {len(self.skip)} layers the server has) | docker load")


#: the marks of a `Beside`'s branches, in the dry run and the progress lines
BRANCHES = "abcdefgh"


@dataclass(frozen=True)
class Beside:
    """Branches of steps that run at the same time, each branch in its own order; the plan goes on
    once every branch is done. After a failure in one, the others start no further step, and the
    plan stops with that failure. Each inner step keeps its own phase."""

    title: str
    branches: tuple  # of tuples of steps

    def __post_init__(self):
        object.__setattr__(self, "branches", tuple(tuple(b) for b in self.branches if b))
        if len(self.branches) > len(BRANCHES):
            raise ValueError(f"a Beside runs at most {len(BRANCHES)} branches, not {len(self.branches)}")

    def leaves(self) -> list:
        return [s for branch in self.branches for s in branch]


Step = Run | WriteFile | Check | ShipImage


def in_phase(phase: Phase, *steps) -> list:
    """The same steps, each marked as part of `phase` (a `Beside` keeps its inner steps' phases)."""
    return [s if isinstance(s, Beside) else dataclasses.replace(s, phase=phase) for s in steps]


@dataclass
class Plan:
    """An ordered list of steps with a name; printing it is the dry run."""

    name: str
    steps: list = field(default_factory=list)

    def add(self, *steps, phase: Phase | None = None) -> "Plan":
        """Append steps; with `phase`, each is marked as part of it."""
        self.steps.extend(in_phase(phase, *steps) if phase is not None else steps)
        return self

    def __iter__(self):
        """Every step that does something, those inside a `Beside` in their branches' order."""
        for step in self.steps:
            yield from step.leaves() if isinstance(step, Beside) else (step,)

    def __len__(self):
        return sum(1 for _ in self)

    def render(self) -> str:
        if not self.steps:
            return f"plan {self.name}: nothing to do"
        total = len(self)
        width = len(str(total))
        lines, number = [f"plan {self.name}: {total} steps"], 0
        for step in self.steps:
            if not isinstance(step, Beside):
                number += 1
                lines.append(f"  {number:>{width}}. {step.describe()}")
                continue
            lines.append(f"  {'':>{width}}  {step.title}, side by side:")
            for letter, branch in zip(BRANCHES, step.branches):
                for inner in branch:
                    number += 1
                    lines.append(f"  {number:>{width}}. {letter}| {inner.describe()}")
        return "\n".join(lines)
