"""Stand-ins for the server's programs (docker, sshd, systemctl...) that unit tests put first on
PATH, so the real shell scripts of a step run against a scripted answer."""

from __future__ import annotations

import os
from pathlib import Path


def fake_programs(folder: Path, **scripts: str) -> str:
    """Write each script as an executable in `folder` (made if missing); the PATH that finds them first."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in scripts.items():
        program = folder / name.replace("_", "-")
        program.write_text(text)
        program.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"
