"""A Dockerfile cut in two: the dependency part and the code part (pure: text in, text out).

The shape this works with (the team's, and the usual one): a final stage that first makes the
environment (base image, system packages, users, `COPY --from=<builder>` of the venv or
node_modules) and then copies the code from the build context. The first `COPY`/`ADD` from the
context in the final stage is the cut. Everything before it, with every stage it draws on, is the
*dependency part*; the rest is the *code part*, built `FROM` the dependency image.

What the dependency part reads (its Dockerfile text, the context files its stages copy, the build
args, the base images) is listed in `Split.context_sources` and `Split.bases`: `images.py` digests
exactly those into the dependency image's name, so a reused layer can never be stale.

A Dockerfile this cannot read safely (a custom escape character, heredocs, `ADD <url>`, secret or
ssh mounts, `ONBUILD` in the dependency part, a final stage with no copy from the context) gives
`None`, and the image is built whole with no cache, as before.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the arguments, continuation lines joined
    text: str  # the source lines, as written (comments inside a continuation dropped)


@dataclass(frozen=True)
class Stage:
    base: str  # the FROM argument (an image or an earlier stage's name), unexpanded
    name: str | None  # AS name, lower case
    instructions: tuple  # after the FROM
    from_text: str


@dataclass(frozen=True)
class Split:
    """The two Dockerfiles, and what the dependency part reads."""

    dependency_dockerfile: str
    code_head: str  # what comes before the code part's FROM (directives, global ARGs, other stages)
    code_tail: str  # what comes after it
    context_sources: tuple  # context paths the dependency part copies ("." for all of it)
    bases: tuple  # image references the dependency part starts from or copies from, expanded

    def code_dockerfile(self, dependency_image: str) -> str:
        return f"{self.code_head}FROM {dependency_image}{self.code_tail}"


class Unsupported(ValueError):
    """This Dockerfile is built whole (the reason says why)."""


def instructions(text: str) -> tuple[list[str], list[Instruction]]:
    """(parser directives as written, instructions). Continuations end with a backslash; comment
    lines are dropped, inside a continuation too, as Docker does."""
    lines = text.splitlines()
    directives, i = [], 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) != "\\":
            raise Unsupported(f"escape={match.group(2)} (only the default backslash is read)")
        directives.append(lines[i])
        i += 1
    out, parts, source = [], [], []
    for line in lines[i:]:
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue
        source.append(line)
        if stripped.endswith("\\"):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        joined = " ".join(p.strip() for p in parts if p.strip())
        keyword, _, args = joined.partition(" ")
        if "<<" in args and keyword.upper() in ("RUN", "COPY", "ADD") and re.search(r"<<-?[\"']?[A-Za-z_]", args):
            raise Unsupported("a heredoc")
        out.append(Instruction(keyword.upper(), args.strip(), "\n".join(source)))
        parts, source = [], []
    if parts:
        raise Unsupported("a continuation at the end of the file")
    return directives, out


def _flags(args: str) -> tuple[dict, list[str]]:
    """`--name=value` flags (repeated ones joined by newlines) and the remaining words (JSON form too)."""
    rest = args.strip()
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, value = word[2:].partition("=")
        flags[name.lower()] = (flags[name.lower()] + "\n" + value) if name.lower() in flags else value
        rest = rest.strip()
    if rest.startswith("["):
        try:
            words = json.loads(rest)
        except ValueError:
            words = shlex.split(rest)
    else:
        words = shlex.split(rest)
    return flags, [str(w) for w in words]


def stages(found: list[Instruction]) -> tuple[list[Instruction], list[Stage]]:
    """(the global ARGs before the first FROM, the stages)."""
    head: list[Instruction] = []
    out: list[Stage] = []
    current = None
    for ins in found:
        if ins.keyword == "FROM":
            if current is not None:
                out.append(Stage(*current))
            _, words = _flags(ins.args)
            name = words[2].lower() if len(words) >= 3 and words[1].lower() == "as" else None
            current = [words[0], name, [], ins.text]
        elif current is None:
            if ins.keyword != "ARG":
                raise Unsupported(f"{ins.keyword} before the first FROM")
            head.append(ins)
        else:
            current[2].append(ins)
    if current is None:
        raise Unsupported("no FROM")
    out.append(Stage(*current))
    return head, [Stage(s.base, s.name, tuple(s.instructions), s.from_text) for s in out]


def expand(word: str, values: dict) -> str:
    """${NAME}, ${NAME:-default} and $NAME from the global ARGs (an unset one is refused)."""
    def one(match):
        name = match.group(1) or match.group(3)
        if values.get(name):
            return values[name]
        if match.group(2):
            return match.group(2)
        raise Unsupported(f"${name} has no value")
    return _VAR.sub(one, word)


def _global_args(head: list[Instruction], build_args: dict) -> dict:
    values = {}
    for ins in head:
        for word in shlex.split(ins.args):
            name, eq, default = word.partition("=")
            values[name] = build_args[name] if name in build_args else default
    return values


def _references(ins: Instruction) -> list[str]:
    """The stages or images one instruction draws on (COPY --from, RUN --mount from=)."""
    if ins.keyword in ("COPY", "ADD"):
        flags, _ = _flags(ins.args)
        return [flags["from"]] if "from" in flags else []
    if ins.keyword == "RUN":
        flags, _ = _flags(ins.args)
        refs = []
        for mount in flags.get("mount", "").split("\n") if "mount" in flags else []:
            options = dict(p.partition("=")[::2] for p in mount.split(","))
            if "from" in options:
                refs.append(options["from"])
        return refs
    return []


def _remote(source: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://|^git@", source))


def _copies_context(ins: Instruction) -> bool:
    """A COPY or ADD of files from the build context (not from a stage, an image or a URL)."""
    if ins.keyword not in ("COPY", "ADD"):
        return False
    flags, words = _flags(ins.args)
    return "from" not in flags and any(not _remote(w) for w in words[:-1])


def _context_reads(ins: Instruction) -> list[str]:
    """The context paths one instruction of the dependency part reads."""
    flags, words = _flags(ins.args)
    if ins.keyword in ("COPY", "ADD") and "from" not in flags:
        sources = words[:-1]
        for source in sources:
            if ins.keyword == "ADD" and _remote(source):
                raise Unsupported(f"ADD {source} (a remote source has no digest here)")
        return sources
    if ins.keyword == "RUN" and "mount" in flags:
        reads = []
        for mount in flags["mount"].split("\n"):
            options = dict(p.partition("=")[::2] for p in mount.split(","))
            kind = options.get("type", "bind")
            if kind in ("secret", "ssh"):
                raise Unsupported(f"RUN --mount=type={kind} (its input has no digest here)")
            if kind == "bind" and "from" not in options:
                reads.append(options.get("source", options.get("src", ".")))
        return reads
    return []


def split(text: str, build_args: dict) -> Split:
    """The dependency and code parts of a Dockerfile (raises `Unsupported`)."""
    directives, found = instructions(text)
    head, all_stages = stages(found)
    final = all_stages[-1]
    cut = next((i for i, ins in enumerate(final.instructions) if _copies_context(ins)), None)
    if cut is None:
        raise Unsupported("the final stage copies nothing from the build context")
    before = final.instructions[:cut]
    if any(ins.keyword == "ONBUILD" for ins in before):
        raise Unsupported("ONBUILD before the code")
    values = _global_args(head, build_args)
    names = {s.name: i for i, s in enumerate(all_stages) if s.name}

    def stage_of(ref: str) -> int | None:
        ref = expand(ref, values)
        if ref.isdigit() and int(ref) < len(all_stages) - 1:
            return int(ref)
        return names.get(ref.lower())

    # the stages the dependency part draws on, and the images it starts from or copies from
    wanted, bases, todo = set(), set(), [final.base, *(r for ins in before for r in _references(ins))]
    while todo:
        ref = todo.pop()
        index = stage_of(ref)
        if index is None:
            image = expand(ref, values)
            if image.lower() != "scratch":
                bases.add(image)
            continue
        if index in wanted:
            continue
        wanted.add(index)
        stage = all_stages[index]
        todo += [stage.base, *(r for ins in stage.instructions for r in _references(ins))]
    reads = [src for index in sorted(wanted) for ins in all_stages[index].instructions for src in _context_reads(ins)]
    reads += [src for ins in before for src in _context_reads(ins)]

    prelude = [*directives, *(ins.text for ins in head), *(s.from_text + "".join("\n" + i.text for i in s.instructions)
                                                          for s in all_stages[:-1])]
    dependency = "\n".join([*prelude, final.from_text, *(ins.text for ins in before)]) + "\n"
    as_name = f" AS {final.name}" if final.name else ""
    redeclared = [ins.text for ins in before if ins.keyword == "ARG"]
    code_head = "".join(line + "\n" for line in prelude)
    code_tail = "\n".join([as_name, *redeclared, *(ins.text for ins in final.instructions[cut:])]) + "\n"
    return Split(dependency, code_head, code_tail, tuple(sorted(set(reads))), tuple(sorted(bases)))
