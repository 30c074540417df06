"""The check: what a container of the image runs, walked for `prisma migrate` / `db push`, and the
deploy plan's step that refuses such an image.

`effective_commands`, `check_commands` and `check_image_config` are pure; `check_image` reads a
real image (`image.py`); `guard_step` is the step the deploy plan runs after the frontend build
(the command line in `__main__.py`).
"""

from __future__ import annotations

import json
import posixpath
import shlex
import sys

from ..errors import GuardError
from ..steps import LOCAL, Check
from .image import ImageFiles, engine, inspect_image
from .walker import Reader, Walker

#: how the guard step runs the command line of `__main__.py`
MODULE = "opskit.prisma"


def effective_commands(entrypoint, cmd, command=None, healthcheck=None) -> list:
    """[(label, argv)] of what a container of the image runs, as Docker composes it.

    ENTRYPOINT + CMD, with a compose `command` replacing CMD. An entrypoint script usually ends in
    `exec "$@"`, so the CMD (or command) is also checked on its own. A healthcheck runs too.
    """
    entrypoint = list(entrypoint or [])
    args = list(split(command) if command is not None else (cmd or []))
    args_label = "compose command" if command is not None else "CMD"
    out = []
    if entrypoint:
        label = f"ENTRYPOINT + {args_label}" if args else "ENTRYPOINT"
        out.append((label, entrypoint + args))
    if args:
        out.append((args_label, args))
    if healthcheck:
        probe = list(split(healthcheck))
        if probe[:1] == ["CMD-SHELL"]:
            probe = ["/bin/sh", "-c", " ".join(probe[1:])]
        elif probe[:1] == ["CMD"]:
            probe = probe[1:]
        out.append(("healthcheck", probe))
    return out


def split(value) -> list:
    """A compose command or healthcheck as argv: a string is split as a shell would."""
    return shlex.split(value) if isinstance(value, str) else list(value)


def check_commands(package: dict | None, commands, read: Reader | None = None) -> list:
    """Violations of each (label, argv) in `commands`, following package.json's scripts."""
    walker = Walker(package, read)
    for label, argv in commands:
        walker.origin = f"{label} `{shlex.join(map(str, argv))}`"
        walker.argv(list(map(str, argv)), [])
    unique, seen = [], set()
    for v in walker.found:  # the same script reached via ENTRYPOINT + CMD and via CMD: once
        key = (v.chain, v.command)
        if key not in seen:
            seen.add(key)
            unique.append(v)
    return unique


def check_image_config(package: dict | None, entrypoint, cmd, command=None, healthcheck=None,
                       read: Reader | None = None) -> list:
    """Violations of an image given its package.json (None if absent), ENTRYPOINT, CMD, and the
    compose `command` / healthcheck that the deployment sets. Pure: `read` (path -> text or None)
    supplies the image's shell scripts, if any."""
    return check_commands(package, effective_commands(entrypoint, cmd, command, healthcheck), read)


def explain(image: str, violations: list) -> str:
    if not violations:
        return f"prisma guard: {image} runs no `prisma migrate` or `prisma db push`: accepted"
    lines = [f"prisma guard: {image} refused: it would change the schema with Prisma"]
    lines += [f"  - {v}" for v in violations]
    lines.append("  fix: remove these commands from the image (package.json scripts, ENTRYPOINT, CMD) and the "
                 "compose command; schema changes go in an Alembic migration (api/migrations)")
    return "\n".join(lines)


def check_image(image: str, command=None, healthcheck=None) -> list:
    """Violations of a built image: its config, its WORKDIR/package.json and the scripts it runs."""
    client = engine()
    try:
        config = inspect_image(image, client)
        with ImageFiles(config, client) as files:
            text = files.file(posixpath.join(config.workdir, "package.json"))
            package = None
            if text is not None:
                try:
                    package = json.loads(text)
                except ValueError as exc:
                    raise GuardError(f"{image}: {config.workdir}/package.json is not valid JSON ({exc})") from None
            return check_image_config(package, config.entrypoint, config.cmd, command, healthcheck,
                                      read=files.program)
    finally:
        client.close()


def guard_step(image: str, command=None, healthcheck=None) -> Check:
    """The deploy plan's step, after the frontend build: refuse an image that would run prisma migrate."""
    argv = [sys.executable, "-m", MODULE, image]
    if command is not None:
        argv += ["--command", json.dumps(split(command))]
    if healthcheck:
        argv += ["--healthcheck", json.dumps(split(healthcheck))]
    return Check(f"prisma guard: {image} must not run prisma migrate / db push", argv, on=LOCAL,
                 hint="Alembic owns the schema: remove prisma migrate / db push from the frontend image and command")
