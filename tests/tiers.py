"""Every test tier in one run, the integration tier beside the e2e tier.

The e2e tier spends most of its time waiting on the simulated VPS (boots, health checks, image
loads), so the integration tier, whose tests each use containers, ports and names of their own,
runs at the same time in a second pytest. The unit tier runs first, and the image kit is built
once before the two start (both use it). Each tier writes its own JUnit file; they are merged into
the one asked for. The exit code is the first tier's that failed, pytest's own (5: no tests).

    python -m tests.tiers build/test-results.xml
"""

from __future__ import annotations

import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    parts = {tier: junit.with_name(f"{junit.stem}-{tier}{junit.suffix}") for tier in ("unit", "integration", "e2e")}
    codes = {"unit": subprocess.run(pytest_argv("unit", parts["unit"]), cwd=ROOT).returncode}

    kit_built = subprocess.run([sys.executable, "-c", "from opskit.sim import kit; kit.build_kit()"], cwd=ROOT)
    if kit_built.returncode != 0:
        print("the image kit could not be built: the integration and e2e tiers need it", flush=True)
        codes["kit"] = kit_built.returncode

    log = junit.with_name(f"{junit.stem}-integration.log")
    started = time.monotonic()
    print(f"\n[tiers] the integration tier runs beside the e2e tier; its output follows the e2e tier's "
          f"(and is in {log.relative_to(ROOT)})", flush=True)
    with log.open("w") as out:
        beside = subprocess.Popen(pytest_argv("integration", parts["integration"]), cwd=ROOT, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            codes["e2e"] = subprocess.run(pytest_argv("e2e", parts["e2e"]), cwd=ROOT).returncode
        finally:
            codes["integration"] = beside.wait()
    print(f"\n[tiers] the integration tier's output ({time.monotonic() - started:.0f}s for both):\n", flush=True)
    print(log.read_text(), flush=True)

    merge(list(parts.values()), junit)
    print(f"[tiers] exit codes: {', '.join(f'{t} {c}' for t, c in codes.items())}", flush=True)
    return next((c for c in codes.values() if c != 0), 0)


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1] if len(sys.argv) > 1 else "build/test-results.xml")))
