"""sshd's configuration: its files and the global settings read from them as sshd does
(`files`, `sshd_config`), and what sshd itself says is in force (`effective`: `sshd -T`)."""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
from dataclasses import dataclass, field

from .base import Fact, marked_blocks, script, sections


@dataclass(frozen=True)
class Sshd:
    """The effective global settings of sshd_config (first value wins, as in sshd)."""

    options: dict  # lower-case keyword -> first value (lower-case)
    ports: tuple
    match_overrides: tuple = ()  # (match line, keyword, value) set inside Match blocks
    unreadable: tuple = ()

    DEFAULTS = {"passwordauthentication": "yes", "kbdinteractiveauthentication": "yes",
                "permitrootlogin": "prohibit-password", "permitemptypasswords": "no",
                "pubkeyauthentication": "yes"}

    def get(self, key: str) -> str:
        key = key.lower()
        return self.options.get(key, self.DEFAULTS.get(key, ""))


_ALIASES = {"challengeresponseauthentication": "kbdinteractiveauthentication"}


def files() -> Fact:
    """The fact: {path: text, or None when unreadable} of sshd_config and its drop-ins."""
    return script("sshd.sh", parse=sshd_files, name="sshd_files")


def sshd_files(section: str) -> dict[str, str | None]:
    """`sshd.sh`'s output: path -> text (None when unreadable)."""
    out: dict[str, str | None] = {}
    for path, block in marked_blocks(section, "file"):
        out[path] = None if block.strip() == "#####unreadable" else block
    return out


def sshd_config(files: dict[str, str | None], main: str = "/etc/ssh/sshd_config") -> Sshd:
    """Parse sshd_config as sshd does for the global section: `Include` (globs, relative to
    /etc/ssh) is expanded in place, the first value of a keyword wins, `Match` starts a
    conditional block that lasts to the end of its file. `files` maps path -> text (None when
    unreadable)."""
    options: dict[str, str] = {}
    ports: list[str] = []
    overrides: list[tuple[str, str, str]] = []
    unreadable: list[str] = []
    seen: set[str] = set()

    def walk(path: str, depth: int = 0) -> None:
        if path in seen or depth > 8:
            return
        seen.add(path)
        text = files.get(path)
        if text is None:
            if path in files:
                unreadable.append(path)
            return
        match = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = re.split(r"\s*=\s*|\s+", line, maxsplit=1)
            key, value = parts[0].lower(), (parts[1].strip() if len(parts) > 1 else "")
            key = _ALIASES.get(key, key)
            if key == "include":
                for pattern in shlex.split(value):
                    full = pattern if pattern.startswith("/") else posixpath.join("/etc/ssh", pattern)
                    for candidate in sorted(p for p in files if fnmatch.fnmatchcase(p, full)):
                        walk(candidate, depth + 1)
                continue
            if key == "match":
                match = line
                continue
            if match is not None:
                overrides.append((match, key, value.lower()))
                continue
            if key == "port":
                ports.append(value)
            options.setdefault(key, value.lower())

    walk(main)
    return Sshd(options, tuple(ports or ["22"]), tuple(overrides), tuple(unreadable))


# -- what sshd itself says: `sshd -T` ----------------------------------------------------------------

#: keywords that `sshd -T` prints once per value (and that sshd_config accumulates rather than
#: taking the first value): their values are tuples, in sshd's order
MULTI_VALUED = frozenset({"port", "listenaddress", "hostkey", "hostcertificate", "allowusers", "denyusers",
                          "allowgroups", "denygroups", "acceptenv", "subsystem", "setenv", "channeltimeout"})


@dataclass(frozen=True)
class Effective:
    """sshd's global settings as `sshd -T` prints them: lower-case keyword -> value (a tuple for
    the keywords in MULTI_VALUED, or any that it prints more than once). `installed` is False when
    the host has no sshd; `error` holds what `sshd -T` said when it could not print its settings."""

    installed: bool
    settings: dict = field(default_factory=dict)
    error: str = ""

    @property
    def known(self) -> bool:
        """The settings were read (sshd is installed and `sshd -T` succeeded)."""
        return self.installed and not self.error

    def get(self, keyword: str, default=None):
        key = keyword.lower()
        if key in self.settings:
            return self.settings[key]
        return () if key in MULTI_VALUED and default is None else default

    def __getitem__(self, keyword: str):
        return self.settings[keyword.lower()]

    def __contains__(self, keyword: str) -> bool:
        return keyword.lower() in self.settings


def effective() -> Fact:
    """The fact: `sshd -T` (run as root), parsed to Effective; a host without sshd, or one where
    `sshd -T` fails, is a value (never a failed fact)."""
    return script("sshd_effective.sh", parse=parse_effective, name="sshd_effective")


def parse_effective(text: str) -> Effective:
    found = sections(text)
    if "absent" in found:
        return Effective(installed=False)
    if "error" in found:
        return Effective(installed=True, error=found["error"].strip() or "sshd -T failed and said nothing")
    if "effective" not in found:
        raise ValueError("the sshd probe printed none of its sections")
    settings: dict[str, object] = {}
    for line in found["effective"].splitlines():
        line = line.strip()
        if not line:
            continue
        key, _, value = line.partition(" ")
        key, value = key.lower(), value.strip()
        if key in MULTI_VALUED:
            settings[key] = (*settings.get(key, ()), value)
        elif key in settings:  # printed twice: keep every value, as for the known multi-valued ones
            before = settings[key]
            settings[key] = (*(before if isinstance(before, tuple) else (before,)), value)
        else:
            settings[key] = value
    if not settings:
        raise ValueError("sshd -T printed no settings")
    return Effective(installed=True, settings=settings)
