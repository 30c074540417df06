"""What every fact is made of: a command for the server and a pure parser of what it printed.

A fact's command is most often a shell script kept as a file beside its module (`*.sh`), run as
`sh -c SCRIPT NAME ARG...`: paths, filters and labels come in as arguments from `opskit.layout`,
never written in the script. Every script is prefixed with `lib.sh` (section marks, the container
of a service). `read` runs one fact, or several in ONE round trip: each under a mark of its own,
with its exit code, and each section goes to its own parser.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import GatherError

HERE = Path(__file__).resolve().parent
#: how a script marks a part of its own output (`sec NAME` in lib.sh)
_SECTION_RE = re.compile(r"^=====opskit:([a-z0-9_.-]+)=====$")
#: how `batch` marks where each fact's output starts and ends
_FACT, _EXIT = "#####fact:", "#####exit:"


@dataclass(frozen=True)
class Output:
    """What a fact's command left: its output, what it wrote to stderr (only when it ran alone:
    a batch has one stderr for all), and its exit code."""

    text: str
    errors: str = ""
    returncode: int = 0


@dataclass(frozen=True)
class Fact:
    """One thing to read from a server: `argv` to run there, and `parse(Output)` -> its dataclass.

    `ok`: the exit codes that mean the fact was read (None: any, the parser decides)."""

    name: str
    argv: tuple
    parse: Callable[[Output], Any] = field(repr=False)
    stdin: bytes | None = field(default=None, repr=False)
    ok: tuple | None = (0,)


def script_text(*files: str) -> str:
    """`lib.sh` and then the named files beside this module, as one shell program."""
    return "\n".join((HERE / f).read_text() for f in ("lib.sh", *files))


def script(file: str, *args: str, parse: Callable[[str], Any] | None = None, name: str | None = None,
           stdin: bytes | None = None, ok: tuple | None = (0,), parse_output: Callable[[Output], Any] | None = None,
           ) -> Fact:
    """A fact whose command is the shell script `file` (beside this module) given `args`, and
    whose parser reads its output text (`parse`) or its whole Output (`parse_output`)."""
    name = name or file.rsplit(".", 1)[0]
    argv = ("sh", "-c", script_text(file), name, *(str(a) for a in args))
    return Fact(name, argv, parse_output or (lambda out: parse(out.text)), stdin, ok)


def words(argv: list[str]) -> str:
    """argv as one word list for a script to split (`docker ps $1`): for docker filters, whose
    parts (labels, project and service names) never hold blanks or glob characters."""
    for a in argv:
        if not a or re.search(r"[\s*?\[\]'\"\\$`]", a):
            raise ValueError(f"not a plain word: {a!r}")
    return " ".join(argv)


# -- one round trip for many facts ------------------------------------------------------------------


def batch(facts) -> list[str]:
    """One `sh` program that runs every fact in turn, each under `#####fact:NAME` and followed by
    `#####exit:CODE` (facts that read stdin cannot share a round trip)."""
    lines = []
    for fact in facts:
        if fact.stdin is not None:
            raise ValueError(f"fact {fact.name} reads stdin: it cannot run in a batch")
        lines += [f"printf '\\n%s\\n' {shlex.quote(_FACT + fact.name)}", shlex.join(fact.argv) + " </dev/null",
                  f"printf '\\n{_EXIT}%s\\n' \"$?\""]
    return ["sh", "-c", "\n".join(lines)]


def split(text: str) -> dict[str, Output]:
    """The output of `batch` -> {fact name: its Output}. A fact cut off before its exit mark (the
    connection dropped) gets exit code -1."""
    out: dict[str, Output] = {}
    name, lines = None, []
    for line in text.splitlines() + [_FACT]:
        if line.startswith((_FACT, _EXIT)) and name is not None:
            code = line[len(_EXIT):] if line.startswith(_EXIT) else ""
            out[name] = Output("\n".join(lines).strip("\n"), "", int(code) if code.lstrip("-").isdigit() else -1)
            name = None
        if line.startswith(_FACT):
            name, lines = line[len(_FACT):] or None, []
        elif name is not None:
            lines.append(line)
    return out


def read(connection, *facts: Fact, what: str = "", more: str = "", timeout: float = 60, check: bool = True):
    """Run `facts` on the server (one alone, several in one round trip) and parse each: its value,
    or a tuple of them in order. `connection.run(argv, stdin=, timeout=)` gives a `Completed`.

    With `check`, a fact that exits with a code outside its `ok`, or that its parser refuses,
    raises GatherError naming `what` and the command to run for `more`."""
    if len(facts) == 1:
        done = connection.run(list(facts[0].argv), stdin=facts[0].stdin, timeout=timeout)
        found = {facts[0].name: Output(done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"),
                                       done.returncode)}
    else:
        # the program goes on stdin: a process list, or sudo's log line on a server that reads as
        # root, shows `sh -s`, not pages of probes
        done = connection.run(["sh", "-s"], stdin=batch(facts)[2].encode(), timeout=timeout)
        found = split(done.stdout.decode(errors="replace"))
    return parse_all(facts, found, what, more, check, done.stderr.decode(errors="replace"))


def parse_all(facts, found: dict[str, Output], what: str = "", more: str = "", check: bool = True,
              errors: str = ""):
    """Each fact's parser on its Output in `found` (a fact missing there: exit code -1, `errors`)."""
    values = []
    for fact in facts:
        out = found.get(fact.name, Output("", errors, -1))
        if check and fact.ok is not None and out.returncode not in fact.ok:
            tail = "\n".join((out.text + "\n" + out.errors).strip().splitlines()[-8:])
            raise GatherError(_hint(f"could not read {what or fact.name} (exit {out.returncode}): {tail}", more))
        try:
            values.append(fact.parse(out))
        except (ValueError, GatherError) as exc:
            if not check:
                raise
            raise GatherError(_hint(f"could not read {what or fact.name}: {exc}", more)) from None
    return values[0] if len(values) == 1 else tuple(values)


def _hint(text: str, more: str) -> str:
    return f"{text}\nmore: {more}" if more else text


# -- splitting a script's own output -----------------------------------------------------------------


def sections(text: str) -> dict[str, str]:
    """Split a script's output at its `=====opskit:NAME=====` lines (`sec NAME` in lib.sh)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = _SECTION_RE.match(line.strip())
        if m:
            current = m.group(1)
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v).strip("\n") for k, v in out.items()}


def marked_blocks(text: str, mark: str) -> list[tuple[str, str]]:
    """Split text at `#####MARK:VALUE` lines: [(value, block)] in order."""
    out: list[tuple[str, list[str]]] = []
    prefix = f"#####{mark}:"
    for line in text.splitlines():
        if line.startswith(prefix):
            out.append((line[len(prefix):], []))
        elif out:
            out[-1][1].append(line)
    return [(k, "\n".join(v)) for k, v in out]
