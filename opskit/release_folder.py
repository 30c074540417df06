"""A release as a folder on this machine (`invoke render --out`, `invoke diff --against`).

Nothing is destroyed that opskit did not create: a folder is written only where nothing is, or
where an earlier render left its marker file, and always whole (built beside it, then swapped in).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UsageError
from .render import SECRETS_DIR, SECRETS_DIR_MODE

#: the file that says "opskit wrote this folder, it may replace it"
MARKER = ".opskit-release"


def refusal(out: Path) -> str | None:
    """Why `out` may not receive a release (None when it may): a file, a link, or a folder with
    anything in it that an earlier render did not leave."""
    if out.is_symlink():
        return f"{out} is a symbolic link; give the folder itself"
    if out.exists() and not out.is_dir():
        return f"{out} is a file, not a folder; give a folder to write the release into"
    if out.is_dir() and any(out.iterdir()) and not _made_by_opskit(out):
        return (f"{out} is a folder with files that opskit did not write (no {MARKER} in it); "
                "give an empty or new folder, or one an earlier `invoke render` made")
    return None


def _made_by_opskit(folder: Path) -> bool:
    """The marker is there, or the manifest of a release that an older opskit (before the marker) wrote."""
    if (folder / MARKER).is_file():
        return True
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"release", "files", "images"} <= set(manifest)


def write(release, out: Path) -> Path:
    """Write the release folder whole, or refuse (UsageError) before anything is written."""
    out = Path(out)
    why = refusal(out)
    if why:
        raise UsageError(f"render --out: {why}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
    try:
        os.chmod(staging, 0o700)
        for rel, f in sorted(release.files.items()):
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f.mode)  # the mode before the content
            with os.fdopen(fd, "wb") as fh:
                os.fchmod(fh.fileno(), f.mode)
                fh.write(f.content)
        secrets = staging / SECRETS_DIR
        if secrets.is_dir():
            os.chmod(secrets, SECRETS_DIR_MODE)  # its files are 0444 for the containers: it guards them
        (staging / MARKER).write_text(f"release {release.id}\n")
        os.chmod(staging, 0o755)
        _swap(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _swap(staging: Path, out: Path) -> None:
    """Put `staging` where `out` is: an empty or absent `out` by one rename; an earlier release
    folder moved aside first, then removed."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        staging.rename(out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    old.rmdir()
    out.rename(old)
    staging.rename(out)
    shutil.rmtree(old)


def read(folder: Path) -> dict[str, bytes]:
    """{relative path: bytes} of a release folder (the marker left out)."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != MARKER}
