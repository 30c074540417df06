"""The step types: every side effect is first one of these plain, printable values.

A plan is a list of steps. Nothing here touches the world; `runner.py` does.
Secrets inside a step print as ``***`` (see `secrets.Secret`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from .secrets import Secret

LOCAL = "local"
SERVER = "server"


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

    def __post_init__(self):
        object.__setattr__(self, "argv", tuple(self.argv))

    def describe(self) -> str:
        cmd = " ".join(_shown(a) for a in self.argv)
        return f"{self.title} [{self.on}] check $ {cmd}"


Step = Run | WriteFile | Check


@dataclass
class Plan:
    """An ordered list of steps with a name; printing it is the dry run."""

    name: str
    steps: list = field(default_factory=list)

    def add(self, *steps) -> "Plan":
        self.steps.extend(steps)
        return self

    def __iter__(self):
        return iter(self.steps)

    def __len__(self):
        return len(self.steps)

    def render(self) -> str:
        if not self.steps:
            return f"plan {self.name}: nothing to do"
        width = len(str(len(self.steps)))
        lines = [f"plan {self.name}: {len(self.steps)} steps"]
        lines += [f"  {i:>{width}}. {s.describe()}" for i, s in enumerate(self.steps, 1)]
        return "\n".join(lines)
