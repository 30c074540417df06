"""The Prisma guard: a deploy refuses a frontend that would run `prisma migrate` or `prisma db push`.

Why: SQLAlchemy + Alembic own the schema (one tool owns DDL). Prisma compares its schema with
the database and "fixes" the difference, so against tables Alembic made it would drop or rewrite
them. The UI role cannot do DDL anyway (see postgres.py); this guard says no before the deploy,
in plain words, instead of a permission error in a crash-looping container.

What is followed is what actually runs: the image's ENTRYPOINT + CMD (or the compose command that
replaces CMD), `sh -c` strings, `npm start` / `npm run X` / `yarn X` / `pnpm X` / `bun run X` into
package.json scripts with their pre/post hooks (recursively), `npx`/`pnpx`/`bunx`/`npm exec`,
node_modules/.bin/prisma, and shell scripts the image runs (read from the image). Allowed:
`prisma generate`, `prisma db pull` and every other read-only command.

The checks (`check_image_config`, `check_commands`) are pure; `inspect_image` and `check_image`
read a real image through the docker CLI; `guard_step` is the plan step; `main` its command line.
"""

from __future__ import annotations

import fnmatch
import io
import json
import posixpath
import re
import shlex
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .errors import OpskitError
from .steps import LOCAL, Check

WHY = ("Alembic (SQLAlchemy) owns the schema; Prisma only reads it (`prisma db pull`, "
       "`prisma generate`) and reads/writes rows")
REFUSED = {
    ("migrate",): "`prisma migrate` applies Prisma's own migrations and would drop or alter the tables "
                  "Alembic created",
    ("db", "push"): "`prisma db push` makes the database match schema.prisma, dropping what it does not know",
    ("db", "execute"): "`prisma db execute` runs a SQL file against the database, a way around Alembic",
}
PRISMA_COMMANDS = {"init", "generate", "migrate", "db", "studio", "format", "validate", "version", "debug",
                   "introspect", "platform", "mcp"}
SHELLS = {"sh", "bash", "dash", "ash", "zsh", "ksh"}
# wrappers that run the rest of the argv: (name, how many arguments of their own after options)
WRAPPERS = {"exec": 0, "env": 0, "nohup": 0, "time": 0, "command": 0, "tini": 0, "tini-static": 0,
            "dumb-init": 0, "docker-entrypoint.sh": 0, "su-exec": 1, "gosu": 1, "sudo": 0, "nice": 0}
# programs whose files are never worth reading as scripts
BINARIES = {"node", "nodejs", "python", "python3", "deno", "true", "false", "echo", "cat", "ls", "sleep", "test",
            "[", "printf", "cd", "export", "set", "wait", "trap", "curl", "wget", "mkdir", "rm", "cp", "mv",
            "chmod", "chown", "ln", "touch", "next", "tsc", "read", "exit", "return", "shift", "unset", "umask",
            "ulimit", "sed", "grep", "awk", "id", "date"}
SHELL_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "esac", "time"}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
_WRAPPER_VALUE_OPTIONS = {"-n", "-u", "--unset", "-C", "--chdir"}  # nice -n 5, env -u X, sudo -u x
_RAW = re.compile(r"\bprisma(?:@\S*)?\s+(migrate\b|db\s+push\b|db\s+execute\b)")
_VALUE_OPTIONS = {"--prefix", "-C", "--cwd", "--workspace", "-w", "--filter", "-F", "--dir", "-p", "--package",
                  "--call", "-c", "--schema", "--config"}


@dataclass(frozen=True)
class Violation:
    """One way the image would change the schema: where it starts, the chain of scripts, what runs."""

    origin: str  # e.g. "CMD `npm start`"
    chain: tuple  # e.g. ('npm script "prestart"',)
    command: str  # e.g. "prisma db push"
    reason: str

    def __str__(self) -> str:
        via = " -> ".join((self.origin, *self.chain))
        return f"{via} runs `{self.command}`: refused: {self.reason}; {WHY}"


Reader = Callable[[str], "str | None"]


@dataclass
class _Walker:
    """Follows commands the way a shell, npm, yarn and pnpm would run them."""

    package: dict | None
    read: Reader | None = None
    found: list = field(default_factory=list)
    origin: str = ""
    _active: set = field(default_factory=set)

    @property
    def scripts(self) -> dict:
        scripts = (self.package or {}).get("scripts") or {}
        return scripts if isinstance(scripts, dict) else {}

    def flag(self, chain, command: str, reason: str) -> None:
        self.found.append(Violation(self.origin, tuple(chain), command, reason))

    # -- shell text ---------------------------------------------------------------------------

    def shell(self, text: str, chain) -> None:
        try:
            tokens = _shell_tokens(text)
        except ValueError:  # unbalanced quotes: fall back to the text itself, refusing when unsure
            for found in _RAW.finditer(text):
                self.flag(chain, found.group(0), "a shell string that cannot be parsed mentions it")
            return
        command: list = []
        for token in tokens + ["\n"]:
            if token == "\n" or re.fullmatch(r"[;&|()]+", token):  # `&&`, `;`, `|`, `);` ...
                self.simple(command, chain)
                command = []
            else:
                command.append(token)

    def simple(self, tokens: list, chain) -> None:
        """One simple command of a shell line: keywords, redirections and assignments dropped."""
        words, skip = [], False
        for token in tokens:
            if skip:
                skip = False
            elif re.fullmatch(r"\d*[<>]+&?|&>>?", token):  # redirection: its target goes too
                skip = True
            elif not words and (token in SHELL_KEYWORDS or _ASSIGNMENT.fullmatch(token)):
                continue
            else:
                words.append(token)
        if words and words[0] not in ("for", "case", "function"):
            self.argv(words, chain)

    # -- one program with its arguments -------------------------------------------------------

    def argv(self, argv: list, chain) -> None:
        argv = _unwrap(list(argv))
        if not argv or argv[0].startswith("$"):  # `exec "$@"`: what it runs is checked as the CMD
            return
        program, args = posixpath.basename(argv[0]), argv[1:]
        if program in SHELLS or program in (".", "source"):  # `. ./env.sh` runs the file in this shell
            self._shell_program(args, chain)
        elif program == "prisma":
            self.prisma(["prisma", *args], chain)
        elif program in ("npx", "pnpx", "bunx"):
            self._npx(args, chain)
        elif program == "npm":
            self._npm(args, chain)
        elif program in ("yarn", "pnpm", "bun"):
            self._yarn_like(program, args, chain)
        elif program in ("node", "nodejs"):
            self._node(args, chain)
        elif program in ("run-s", "run-p", "npm-run-all"):
            for pattern in _positional(args):
                # each match through `npm run`, so with its hooks; `build:*` globs too
                for name in sorted(fnmatch.filter(self.scripts, pattern)):
                    self.run_script(program, name, chain)
        elif program == "concurrently":
            for text in _positional(args):
                if text.startswith(("npm:", "yarn:", "pnpm:", "bun:")):
                    runner, _, name = text.partition(":")
                    self.run_script(runner, name, chain)
                else:
                    self.shell(text, chain)
        elif program not in BINARIES and self.read is not None:
            # an entrypoint script (`docker-entrypoint.sh`, `./start.sh`): read it if it is shell
            text = self.read(argv[0])
            if text is not None and _is_shell_script(text):
                self.script_file(argv[0], text, chain)

    def prisma(self, argv: list, chain) -> None:
        """`prisma <command> ...`: the first known command word decides (options may come first)."""
        words = _positional(argv[1:])
        sub = next((i for i, w in enumerate(words) if w in PRISMA_COMMANDS), None)
        if sub is None:
            return
        key = tuple(words[sub:sub + 2]) if words[sub] == "db" else (words[sub],)
        if key in REFUSED:
            self.flag(chain, " ".join(["prisma", *_printable(argv[1:])]), REFUSED[key])

    def _shell_program(self, args: list, chain) -> None:
        for i, arg in enumerate(args):
            if arg.startswith("-") and not arg.startswith("--") and "c" in arg[1:]:
                if i + 1 < len(args):
                    self.shell(args[i + 1], chain)
                return
            if not arg.startswith("-"):  # `sh script.sh`: the script is a file in the image
                text = self.read(arg) if self.read else None
                if text is not None:
                    self.script_file(arg, text, chain)
                return

    def script_file(self, name: str, text: str, chain) -> None:
        if name in self._active:
            return
        self._active.add(name)
        self.shell(text, [*chain, f"script file {name}"])
        self._active.discard(name)

    def _npx(self, args: list, chain) -> None:
        for i, arg in enumerate(args):
            if arg in ("-c", "--call") and i + 1 < len(args):
                return self.shell(args[i + 1], chain)
            if arg in _VALUE_OPTIONS:
                continue
            if not arg.startswith("-") and (i == 0 or args[i - 1] not in _VALUE_OPTIONS):
                # prisma, prisma@5.22.0, and the old @prisma/cli name
                name = arg.rsplit("@", 1)[0] if arg.count("@") > arg.startswith("@") else arg
                if name in ("prisma", "@prisma/cli"):
                    return self.prisma(["prisma", *args[i + 1:]], chain)
                return self.argv(args[i:], chain)

    def _npm(self, args: list, chain) -> None:
        words = _positional(args)
        if not words:
            return
        sub, rest = words[0], words[1:]
        if sub in ("run", "run-script", "rum", "urn") and rest:
            self.run_script("npm", rest[0], chain)
        elif sub in ("start", "stop", "test", "t", "restart"):
            self.run_script("npm", {"t": "test"}.get(sub, sub), chain)
            if sub == "restart" and "restart" not in self.scripts:
                for name in ("stop", "start"):
                    self.run_script("npm", name, chain)
        elif sub in ("exec", "x"):
            self._npx(args[args.index(sub) + 1:], chain)
        elif sub in ("install", "i", "ci", "rebuild"):
            self.install_hooks("npm", chain)

    def _yarn_like(self, program: str, args: list, chain) -> None:
        words = _positional(args)
        if not words or words[0] in ("install", "i"):
            return self.install_hooks(program, chain)
        sub, rest = words[0], words[1:]
        if sub in ("run", "run-script") and rest:
            if self.package is None or rest[0] in self.scripts:
                return self.run_script(program, rest[0], chain)
            return self.argv(rest, chain)  # `yarn run prisma ...`: a package's bin
        if sub in ("exec", "dlx", "x"):
            return self._npx(args[args.index(sub) + 1:], chain)
        if sub in self.scripts or sub in ("start", "test"):
            return self.run_script(program, sub, chain)
        self.argv(words, chain)  # `yarn prisma migrate deploy`: a package's bin

    def _node(self, args: list, chain) -> None:
        for i, arg in enumerate(args):
            if arg.replace("\\", "/").endswith(("prisma/build/index.js", "node_modules/.bin/prisma")):
                return self.prisma(["prisma", *args[i + 1:]], chain)

    # -- package.json scripts -----------------------------------------------------------------

    def run_script(self, runner: str, name: str, chain) -> None:
        """`npm run NAME`: preNAME, NAME, postNAME (yarn 1 and pnpm with hooks on do the same)."""
        if self.package is None:
            self.found.append(Violation(self.origin, tuple(chain), f"{runner} run {name}",
                                        "no package.json was found where it runs, so what it runs cannot be "
                                        "checked (copy package.json into the image's WORKDIR)"))
            return
        for hook in (f"pre{name}", name, f"post{name}"):
            self.script(hook, chain, runner)

    def install_hooks(self, runner: str, chain) -> None:
        for hook in ("preinstall", "install", "postinstall", "prepare"):
            self.script(hook, chain, runner)

    def script(self, name: str, chain, runner: str = "npm") -> None:
        text = self.scripts.get(name)
        if not isinstance(text, str) or name in self._active:
            return
        self._active.add(name)  # a script that calls itself is followed once
        self.shell(text, [*chain, f'{runner} script "{name}": `{text}`'])
        self._active.discard(name)


def _shell_tokens(text: str) -> list:
    """Words and control operators of shell text, lines kept apart; comments dropped.
    Backquotes become separators, so a command substitution is checked as a command."""
    text = text.replace("\\\n", " ").replace("`", " ; ")
    out: list = []
    for line in text.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        out += list(lexer) + ["\n"]
    return out


def _unwrap(argv: list) -> list:
    """Drop what only leads to the real program: `VAR=x`, `exec`, `env A=b`, `tini --`, `gosu user`."""
    while argv:
        if _ASSIGNMENT.fullmatch(argv[0]):
            argv = argv[1:]
            continue
        name = posixpath.basename(argv[0])
        if name not in WRAPPERS:
            return argv
        rest = argv[1:]
        while rest and (rest[0].startswith("-") or (name == "env" and _ASSIGNMENT.fullmatch(rest[0]))):
            option, rest = rest[0], rest[1:]
            if option == "--":
                break
            if option in _WRAPPER_VALUE_OPTIONS and rest:
                rest = rest[1:]
        argv = rest[WRAPPERS[name]:]
    return argv


def _is_shell_script(text: str) -> bool:
    """A `#!` line naming a shell (`#!/bin/sh`, `#!/usr/bin/env bash`): a node or python script
    is not read as shell text."""
    first = text.split("\n", 1)[0]
    if not first.startswith("#!"):
        return False
    words = first[2:].split()
    if words and posixpath.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
    return bool(words) and posixpath.basename(words[0]) in SHELLS


def _positional(args: Iterable[str]) -> list:
    """Arguments that are not options (skipping the values of options known to take one)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--":
            continue
        elif arg.startswith("-"):
            skip = arg in _VALUE_OPTIONS
        else:
            out.append(arg)
    return out


def _printable(args: list) -> list:
    return [a if re.fullmatch(r"[\w@%+=:,./-]+", a) else shlex.quote(a) for a in args]


# -- what Docker runs ----------------------------------------------------------------------------


def effective_commands(entrypoint, cmd, command=None, healthcheck=None) -> list:
    """[(label, argv)] of what a container of the image runs, as Docker composes it.

    ENTRYPOINT + CMD, with a compose `command` replacing CMD. An entrypoint script usually ends in
    `exec "$@"`, so the CMD (or command) is also checked on its own. A healthcheck runs too.
    """
    entrypoint = list(entrypoint or [])
    args = list(_split(command) if command is not None else (cmd or []))
    args_label = "compose command" if command is not None else "CMD"
    out = []
    if entrypoint:
        label = f"ENTRYPOINT + {args_label}" if args else "ENTRYPOINT"
        out.append((label, entrypoint + args))
    if args:
        out.append((args_label, args))
    if healthcheck:
        probe = list(_split(healthcheck))
        if probe[:1] == ["CMD-SHELL"]:
            probe = ["/bin/sh", "-c", " ".join(probe[1:])]
        elif probe[:1] == ["CMD"]:
            probe = probe[1:]
        out.append(("healthcheck", probe))
    return out


def _split(value) -> list:
    return shlex.split(value) if isinstance(value, str) else list(value)


def check_commands(package: dict | None, commands, read: Reader | None = None) -> list:
    """Violations of each (label, argv) in `commands`, following package.json's scripts."""
    walker = _Walker(package, read)
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


# -- a real image, through the docker CLI --------------------------------------------------------


class GuardError(OpskitError):
    """The image could not be inspected (missing, or docker failed)."""


@dataclass(frozen=True)
class ImageConfig:
    image: str
    entrypoint: tuple
    cmd: tuple
    workdir: str
    path: tuple  # PATH of the image, to find an entrypoint script named without a folder


def _docker(*argv, docker: str = "docker", binary: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([docker, *argv], capture_output=True, text=not binary, timeout=120)
    except FileNotFoundError:
        raise GuardError(f"the docker CLI ({docker}) is not installed here; the prisma guard needs it "
                         "to read the frontend image") from None


def inspect_image(image: str, docker: str = "docker") -> ImageConfig:
    done = _docker("image", "inspect", "--format", "{{json .Config}}", image, docker=docker)
    if done.returncode != 0:
        raise GuardError(f"cannot inspect image {image}: {done.stderr.strip()} (build it first)")
    config = json.loads(done.stdout) or {}
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    path = env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    return ImageConfig(image, tuple(config.get("Entrypoint") or ()), tuple(config.get("Cmd") or ()),
                       config.get("WorkingDir") or "/", tuple(p for p in path.split(":") if p))


CONTAINER_LABEL = "opskit.prisma-guard"  # on the throw-away containers, to find any left behind


class ImageFiles:
    """Reads files of an image from a created, never started, container (works for any image,
    `FROM scratch` too: nothing inside the image is executed). Use as a context manager."""

    MAX_BYTES = 1_000_000

    def __init__(self, config: ImageConfig, docker: str = "docker"):
        self.config, self.docker, self.container = config, docker, None

    def __enter__(self) -> "ImageFiles":
        done = _docker("create", "--network", "none", "--label", f"{CONTAINER_LABEL}=1",
                       "--entrypoint", "/opskit-prisma-guard-never-started", self.config.image, docker=self.docker)
        if done.returncode != 0:
            raise GuardError(f"cannot create a container of {self.config.image} to read its files: "
                             f"{done.stderr.strip()}")
        self.container = done.stdout.strip()
        return self

    def __exit__(self, *exc) -> None:
        if self.container:
            _docker("rm", "--force", self.container, docker=self.docker)

    def file(self, path: str) -> str | None:
        """The text of a regular file (symlinks followed), None if absent, binary or too big."""
        done = _docker("cp", "--follow-link", f"{self.container}:{path}", "-", docker=self.docker, binary=True)
        if done.returncode != 0:
            return None
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
            member = next((m for m in tar.getmembers() if m.isfile()), None)
            if member is None or member.size > self.MAX_BYTES:
                return None
            data = tar.extractfile(member).read()
        if b"\x00" in data[:4096]:
            return None
        return data.decode("utf-8", errors="replace")

    def program(self, name: str) -> str | None:
        """A script the image would run as `name`: a path (from WORKDIR), or looked up in PATH."""
        if "/" in name:
            return self.file(posixpath.join(self.config.workdir, name))
        for folder in self.config.path:
            text = self.file(posixpath.join(folder, name))
            if text is not None:
                return text
        return None


def check_image(image: str, command=None, healthcheck=None, docker: str = "docker") -> list:
    """Violations of a built image: its config, its WORKDIR/package.json and the scripts it runs."""
    config = inspect_image(image, docker)
    with ImageFiles(config, docker) as files:
        text = files.file(posixpath.join(config.workdir, "package.json"))
        package = None
        if text is not None:
            try:
                package = json.loads(text)
            except ValueError as exc:
                raise GuardError(f"{image}: {config.workdir}/package.json is not valid JSON ({exc})") from None
        return check_image_config(package, config.entrypoint, config.cmd, command, healthcheck, read=files.program)


def guard_step(image: str, command=None, healthcheck=None) -> Check:
    """The deploy plan's step, after the frontend build: refuse an image that would run prisma migrate."""
    argv = [sys.executable, "-m", "opskit.prisma_guard", image]
    if command is not None:
        argv += ["--command", json.dumps(_split(command))]
    if healthcheck:
        argv += ["--healthcheck", json.dumps(_split(healthcheck))]
    return Check(f"prisma guard: {image} must not run prisma migrate / db push", argv, on=LOCAL,
                 hint="Alembic owns the schema: remove prisma migrate / db push from the frontend image and command")


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m opskit.prisma_guard", description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--command", help="the compose command, as a JSON list")
    parser.add_argument("--healthcheck", help="the healthcheck test, as a JSON list")
    args = parser.parse_args(argv)
    try:
        found = check_image(args.image, json.loads(args.command) if args.command else None,
                            json.loads(args.healthcheck) if args.healthcheck else None)
    except OpskitError as exc:
        print(f"prisma guard: {exc}", file=sys.stderr)
        return 2
    print(explain(args.image, found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
