"""Digests of build inputs: an image is named by what it is built from, so a deploy can decide
from the inputs alone whether a build is needed (a `--no-cache` build always makes new layers)."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import subprocess
from pathlib import Path

# never part of an image's meaning, whatever .dockerignore says
_ALWAYS_SKIP = ("__pycache__", "*.pyc", ".git", "node_modules", ".pytest_cache", ".venv")


def _ignore_patterns(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a path is out when it, or a folder above it, matches a pattern.
    Negations (`!pattern`) are not supported; our contexts do not use them."""
    parts = rel.split("/")
    if any(fnmatch.fnmatch(part, skip) for part in parts for skip in _ALWAYS_SKIP):
        return True
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(prefix, p.lstrip("/")) for p in patterns if not p.startswith("!")
               for prefix in prefixes)


def context_files(context: Path) -> list[str]:
    patterns = _ignore_patterns(context)
    found = []
    for dirpath, dirnames, filenames in os.walk(context):
        rel_dir = Path(dirpath).relative_to(context).as_posix()
        dirnames[:] = sorted(d for d in dirnames
                             if not _ignored(d if rel_dir == "." else f"{rel_dir}/{d}", patterns))
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if not _ignored(rel, patterns):
                found.append(rel)
    return sorted(found)


def _add_files(h, context: Path, files) -> None:
    for rel in files:
        path = context / rel
        h.update(rel.encode() + b"\0")
        h.update(b"x" if os.access(path, os.X_OK) else b"-")
        h.update(hashlib.sha256(path.read_bytes()).digest())


def files_read(context: Path, sources) -> list[str]:
    """The context files that `COPY <sources>` reads: a source names a file, a folder (all below
    it) or a glob over either; `.`, `/` or `*` is the whole context. `.dockerignore` applies."""
    wanted = [s.strip().removeprefix("./").strip("/") for s in sources]
    everything = any(w in ("", ".", "*") for w in wanted)
    patterns = [w.split("/") for w in wanted]
    out = []
    for rel in context_files(context):
        parts = rel.split("/")
        # a `*` stays within one path segment (Go's filepath.Match, which Docker uses)
        if everything or any(len(p) <= len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, p))
                             for p in patterns):
            out.append(rel)
    return out


def files_digest(context: Path, files) -> str:
    """sha256 over some context files (path, executable bit, content)."""
    h = hashlib.sha256()
    _add_files(h, context, sorted(files))
    return h.hexdigest()


def context_digest(context: Path, dockerfile: str = "Dockerfile", args: tuple = ()) -> str:
    """sha256 over the context's files (path, executable bit, content), the Dockerfile and args."""
    h = hashlib.sha256()
    _add_files(h, context, context_files(context))
    h.update(b"dockerfile\0" + dockerfile.encode())
    for name, value in args:
        h.update(f"arg\0{name}={value}\0".encode())
    return h.hexdigest()


def source_revision(path: Path) -> str:
    """The git commit of `path`, with `-dirty` when it has uncommitted changes, or `unknown`."""
    try:
        rev = subprocess.run(["git", "-C", str(path), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
