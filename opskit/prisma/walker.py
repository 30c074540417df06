"""The walker: follows what a container runs the way a shell, npm, yarn, pnpm and bun would, and
notes every `prisma migrate`, `prisma db push` and `prisma db execute` it reaches.

Followed: `sh -c` strings, `npm start` / `npm run X` / `yarn X` / `pnpm X` / `bun run X` into
package.json scripts with their pre/post hooks (recursively), `npx`/`pnpx`/`bunx`/`npm exec`,
`run-s`/`run-p`/`concurrently`, node_modules/.bin/prisma, and shell scripts the image runs (through
a `Reader`, path -> text). Allowed: `prisma generate`, `prisma db pull` and every other read-only
command. Pure: it reads nothing but what `read` gives it.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Iterable

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
class Walker:
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
