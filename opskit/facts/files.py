"""Files on the server as provisioning manages them: content, mode, owner and group."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from .base import Fact, marked_blocks, script


@dataclass(frozen=True)
class FileState:
    path: str
    content: bytes | None  # None: the file is missing (or not a regular file)
    mode: int | None = None
    owner: str | None = None
    group: str | None = None

    @property
    def exists(self) -> bool:
        return self.content is not None


def files(*paths: str, name: str = "files") -> Fact:
    """The fact: {path: FileState} for each path (several facts of this kind need their own names)."""
    return script("files.sh", *paths, parse=parse_files, name=name)


def parse_files(text: str) -> dict[str, FileState]:
    out = {}
    for path, block in marked_blocks(text, "file"):
        lines = block.strip("\n").split("\n")
        if not lines or lines[0].strip() == "missing":
            out[path] = FileState(path, None)
            continue
        mode, owner, group = lines[0].split()
        encoded = lines[1].strip() if len(lines) > 1 else ""
        if encoded == "!unreadable":
            raise ValueError(f"{path} exists but cannot be read (provisioning reads it as root)")
        try:
            content = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{path}: its content did not arrive whole ({exc})") from None
        out[path] = FileState(path, content, int(mode, 8), owner, group)
    return out
