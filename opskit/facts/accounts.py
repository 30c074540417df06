"""The deploy user as the server knows it: passwd entry, groups, and the release folder it owns."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Fact, script, sections


@dataclass(frozen=True)
class Account:
    exists: bool
    home: str | None
    shell: str | None
    groups: tuple
    remote_dir: tuple | None  # (owner, group, mode) of the release folder, None when missing


def account(user: str, remote_dir: str) -> Fact:
    return script("accounts.sh", user, remote_dir, parse=parse_account, name="account")


def parse_account(text: str) -> Account:
    s = sections(text)
    entry = s.get("passwd", "").strip().split(":")
    exists = len(entry) >= 7
    folder = s.get("remote_dir", "").split()
    return Account(exists, entry[5] if exists else None, entry[6] if exists else None,
                   tuple(s.get("groups", "").split()),
                   (folder[0], folder[1], int(folder[2], 8)) if len(folder) == 3 else None)
