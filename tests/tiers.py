"""Every test tier in one run: the unit and integration tiers beside the e2e tier.

The e2e tier spends most of its time waiting on the simulated VPS (boots, health checks, image
loads), so the unit tier and then the integration tier (whose tests each use containers, ports and
names of their own) run at the same time in a second process. The image kit is built once before
the two start (both use it). Each tier writes its own JUnit file; they are merged into the one
asked for. The exit code is the first tier's that failed, pytest's own (5: no tests collected).

    python -m tests.tiers build/test-results.xml
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "integration", "e2e")


def pytest_argv(tier: str, junit: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", f"tests/{tier}", f"--junitxml={junit}"]


def merge(parts: list[Path], into: Path) -> None:
    """One <testsuites> holding every tier's <testsuite> (a tier that wrote none is left out)."""
    merged = ET.Element("testsuites")
    for part in parts:
        if part.exists():
            root = ET.parse(part).getroot()
            merged.extend([root] if root.tag == "testsuite" else list(root))
    into.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(merged).write(into, encoding="utf-8", xml_declaration=True)


def run(junit: Path) -> int:
    junit = junit if junit.is_absolute() else ROOT / junit
    junit.parent.mkdir(parents=True, exist_ok=True)  # a fresh checkout has no build/ yet: the logs go there
    parts = {tier: junit.with_name(f"{junit.stem}-{tier}{junit.suffix}") for tier in TIERS}
    codes = {}
    kit_built = subprocess.run([sys.executable, "-c", "from opskit.sim import kit; kit.build_kit()"], cwd=ROOT)
    if kit_built.returncode != 0:
        print("the image kit could not be built: the integration and e2e tiers need it", flush=True)
        codes["kit"] = kit_built.returncode

    # the unit tier, then the integration tier, each with its exit code, in one background shell
    logs = {tier: junit.with_name(f"{junit.stem}-{tier}.log") for tier in ("unit", "integration")}
    script = "; ".join(f"{shlex.join(pytest_argv(t, parts[t]))} > {shlex.quote(str(logs[t]))} 2>&1; "
                       f"echo $? > {shlex.quote(str(logs[t]))}.exit" for t in logs)
    started = time.monotonic()
    print(f"\n[tiers] the unit and integration tiers run beside the e2e tier; their output follows the "
          f"e2e tier's (and is in {', '.join(str(p.relative_to(ROOT)) for p in logs.values())})", flush=True)
    beside = subprocess.Popen(["sh", "-c", script], cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        codes["e2e"] = subprocess.run(pytest_argv("e2e", parts["e2e"]), cwd=ROOT).returncode
    finally:
        beside.wait()
    for tier, log in logs.items():
        print(f"\n[tiers] the {tier} tier's output ({time.monotonic() - started:.0f}s since the tiers started):\n",
              flush=True)
        print(log.read_text() if log.exists() else "(no output)", flush=True)
        exit_file = log.with_name(log.name + ".exit")
        codes[tier] = int(exit_file.read_text().strip()) if exit_file.exists() else 1

    merge([parts[t] for t in TIERS], junit)
    print(f"[tiers] exit codes: {', '.join(f'{t} {c}' for t, c in codes.items())}", flush=True)
    return next((c for c in codes.values() if c != 0), 0)


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1] if len(sys.argv) > 1 else "build/test-results.xml")))
