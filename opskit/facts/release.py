"""Releases on the server: which one `current` points at, which are on disk, the deploy lock, and
the current one in detail (manifest, file modes and hashes, config files)."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from .base import Fact, read, script, sections

# -- on disk (what a deploy plans from) ---------------------------------------------------------------


@dataclass(frozen=True)
class Lock:
    holder: str
    since: float  # unix time
    release: str
    deploy_id: str = ""
    renewed: float | None = None  # when its holder last renewed the lease (the info file's time)

    def idle(self, now: float) -> float | None:
        """Seconds since the lease was renewed (None when unknown)."""
        return None if self.renewed is None or not now else max(now - self.renewed, 0.0)

    def describe(self) -> str:
        deploy = f" (deploy {self.deploy_id[:12]})" if self.deploy_id else ""
        return f"{self.holder}{deploy} since {self.since:.0f} (release {self.release})"


@dataclass(frozen=True)
class OnDisk:
    current: str | None  # the release id `current` points at
    # release ids on disk, oldest first: by when each was last made current (or uploaded); unfinished
    # uploads left out
    releases: tuple
    lock: Lock | None
    caddy_files: dict = field(default_factory=dict)  # file name in Caddy's config folder -> sha256


def on_disk(layout) -> Fact:
    return script("releases.sh", layout.current, layout.releases, layout.lock_info, layout.caddy,
                  parse=parse_on_disk, name="on_disk")


def parse_on_disk(text: str) -> OnDisk:
    s = sections(text)
    link = s.get("current", "").strip().rstrip("/")
    names = tuple(n.strip() for n in s.get("releases", "").splitlines() if n.strip() and "." not in n)
    renewed = s.get("lock_renewed", "").strip()
    caddy = {}
    for line in s.get("caddy_files", "").splitlines():
        digest, _, name = line.strip().partition("  ")
        if name:
            caddy[posixpath.basename(name)] = digest
    return OnDisk(posixpath.basename(link) or None, names,
                  parse_lock(s.get("lock", ""), float(renewed) if renewed.isdigit() else None), caddy)


def parse_lock(text: str, renewed: float | None = None) -> Lock | None:
    """The lock's info file (one JSON object), or None when no deploy holds the lock."""
    text = text.replace("\n", "").strip()
    if not text:
        return None
    try:
        raw = json.loads(text)
        return Lock(str(raw.get("holder", "?")), float(raw.get("since", 0)), str(raw.get("release", "?")),
                    str(raw.get("deploy_id", "")), renewed)
    except (ValueError, TypeError, AttributeError):
        return Lock("unreadable lock file", 0.0, "?", renewed=renewed)


# -- the current release in detail (what the smoke suite checks) --------------------------------------------


@dataclass(frozen=True)
class Stat:
    mode: int
    user: str
    group: str
    kind: str
    path: str

    @property
    def octal(self) -> str:
        return f"{self.mode:04o}"


@dataclass
class ReleaseFacts:
    link: str  # what `current` points at (relative)
    path: str  # the release folder it resolves to
    manifest: dict | None
    manifest_error: str
    stats: dict  # path -> Stat
    sha256: dict  # relative path -> digest
    live_caddyfile_sha256: str
    compose_file: str
    caddyfile: str
    live_caddyfile: str
    lock: str  # the lock's info, as the file says it ("" when no deploy holds the lock)

    @property
    def id(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1] if self.path else ""


def current(layout) -> Fact:
    return script("current.sh", layout.current, layout.releases, layout.caddy, layout.lock_info, layout.secrets,
                  parse=parse_current, name="current_release")


def parse_current(text: str) -> ReleaseFacts:
    s = sections(text)
    manifest, error = None, ""
    try:
        manifest = json.loads(s.get("manifest", ""))
    except ValueError:
        error = s.get("manifest", "").strip()[-300:] or "empty"
    live = sha256_lines(s.get("live_caddyfile_sha256", ""))
    return ReleaseFacts(
        link=s.get("current", "").strip(),
        path=s.get("real", "").strip(),
        manifest=manifest,
        manifest_error=error,
        stats=stats(s.get("stat", "")),
        sha256=sha256_lines(s.get("sha256", "")),
        live_caddyfile_sha256=next(iter(live.values()), ""),
        compose_file=s.get("compose_file", ""),
        caddyfile=s.get("caddyfile", ""),
        live_caddyfile=s.get("live_caddyfile", ""),
        lock=s.get("lock", "").strip(),
    )


def gather(connection, layout) -> ReleaseFacts:
    return read(connection, current(layout), what="the current release", more=f"ls -l {layout.root}")


def stats(text: str) -> dict[str, Stat]:
    """`stat -c '%a|%U|%G|%F|%n'` lines -> {path: Stat} (error lines ignored)."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|", 4)
        if len(parts) == 5 and re.fullmatch(r"[0-7]{1,4}", parts[0]):
            out[parts[4]] = Stat(int(parts[0], 8), parts[1], parts[2], parts[3], parts[4])
    return out


def sha256_lines(text: str) -> dict[str, str]:
    """`sha256sum` lines -> {path without ./: digest}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([0-9a-f]{64})\s+\*?(.+)$", line.strip())
        if m:
            path = m.group(2)
            out[path[2:] if path.startswith("./") else path] = m.group(1)
    return out


def secrets_in(text: str, secrets: dict, min_length: int = 8) -> list[str]:
    """Names of the secrets whose value (plain or URL-encoded) appears in `text` (a config file
    of the release, or anything else that must hold none)."""
    found = []
    for name, secret in sorted(secrets.items()):
        value = secret.reveal() if hasattr(secret, "reveal") else str(secret)
        if len(value) < min_length:
            continue
        if value in text or quote(value, safe="") in text:
            found.append(name)
    return found
