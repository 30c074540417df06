#!/usr/bin/env python3
"""Run docker-bench-security's section 5 (container runtime) against an engine and count its
warnings per container, apart from the ones the compose file documents as decisions.

docker-bench-security (github.com/docker/docker-bench-security) is a bash script that asks the
docker CLI; nothing of it lives in this repository and nothing is downloaded here. Point --bench at
a copy you have: its folder, a tar of it, or a bare git directory (a mirror; its HEAD is archived).
The copy is sent as a tar on stdin to `--via CMD` (a command prefix that runs `sh` where the engine
is: `docker exec -i opskit-vps`, `ssh deploy@host`), unpacked in a temporary folder there, run with
`-b -c container_runtime`, and removed. Without --via it runs here, against DOCKER_HOST or the local
engine. Its host-side checks (5.26 reads dockerd's flags and daemon.json) are right only when it
runs on the engine's own host, so prefer --via for a server.

    .venv/bin/python scripts/docker_bench.py --bench ~/src/docker-bench-security \\
        --via "docker exec -i opskit-vps" --include jobagent-

prints, per container, its section-5 WARN count and checks, then the warnings that are not
documented (opskit/hardening.py BENCH_EXCEPTIONS, rendered into the compose file). Exit 0 when
there are none, 1 when there are, 2 when the bench did not run. `--raw FILE` keeps its output;
`--parse FILE` reads a saved output instead of running anything.
"""

from __future__ import annotations

import argparse
import io
import re
import shlex
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opskit.hardening import BENCH_EXCEPTIONS

ENGINE = "(engine)"  # warnings of a check that names no container (5.1: swarm mode)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CHECK = re.compile(r"^\[(PASS|WARN|INFO|NOTE)\]\s+(5\.\d+)\s+-\s")
_ITEM = re.compile(r"^\[(WARN|INFO)\]\s+\*\s+(.*\S)\s*$")
# the per-container lines of section 5 end in the container's name, after ": ", " in " or " to "
_CONTAINER = re.compile(r"(?::|\bin|\bto)\s+(\S+)$")


@dataclass
class Report:
    warns: dict = field(default_factory=dict)  # container -> {check id: count}
    checks: dict = field(default_factory=dict)  # check id -> PASS/WARN/INFO (its header line)

    def add(self, container: str, check: str) -> None:
        per = self.warns.setdefault(container, {})
        per[check] = per.get(check, 0) + 1

    def total(self, container: str) -> int:
        return sum(self.warns.get(container, {}).values())


def parse(text: str) -> Report:
    """docker-bench-security's output (colours or not) -> WARN counts per container and check.
    A WARN check header with no per-container WARN line counts once against ENGINE."""
    report = Report()
    check, items = None, 0
    for raw in text.splitlines():
        line = _ANSI.sub("", raw).strip()
        header = _CHECK.match(line)
        if header:
            if check and report.checks.get(check) == "WARN" and not items:
                report.add(ENGINE, check)
            check, items = header.group(2), 0
            report.checks[check] = header.group(1)
            continue
        item = _ITEM.match(line)
        if item and check:
            found = _CONTAINER.search(item.group(2))
            if item.group(1) == "WARN" and found:
                report.add(found.group(1), check)
                items += 1
            continue
        if line.startswith("["):  # any other line ends the check's list
            if check and report.checks.get(check) == "WARN" and not items:
                report.add(ENGINE, check)
            check, items = None, 0
    if check and report.checks.get(check) == "WARN" and not items:
        report.add(ENGINE, check)
    return report


def service_of(container: str) -> str:
    """`<project>-<service>-<n>` (Compose v2's container names) -> service; else the name."""
    m = re.match(r"^.+?-([a-z0-9_]+)-\d+$", container)
    return m.group(1) if m else container


def is_documented(check: str, container: str, exceptions=BENCH_EXCEPTIONS) -> bool:
    service = service_of(container)
    return any(c == check and (who == "all" or service in who.split()) for c, who, _ in exceptions)


def undocumented(report: Report, exceptions=BENCH_EXCEPTIONS) -> list[tuple[str, str, int]]:
    """(container, check, count) of every warning no decision covers (engine-level ones left out:
    they are not the compose file's)."""
    return [(container, check, n) for container, per in sorted(report.warns.items()) if container != ENGINE
            for check, n in sorted(per.items(), key=_by_number) if not is_documented(check, container, exceptions)]


def _by_number(item) -> list[int]:
    """Check ids in their own order: 5.2 before 5.13."""
    return [int(x) for x in item[0].split(".")]


def summary(report: Report) -> str:
    lines = [f"{'container':40} {'WARN':>4}  checks (* = documented decision)"]
    for container, per in sorted(report.warns.items()):
        checks = ", ".join(f"{c}{'*' if is_documented(c, container) else ''}" + (f"x{n}" if n > 1 else "")
                           for c, n in sorted(per.items(), key=_by_number))
        lines.append(f"{container:40} {report.total(container):>4}  {checks}")
    left = undocumented(report)
    lines.append("")
    lines.append(f"undocumented section-5 warnings: {sum(n for _, _, n in left)}"
                 + "".join(f"\n  {c} {check} x{n}" for c, check, n in left))
    return "\n".join(lines)


# -- running it ---------------------------------------------------------------------------------------


def bench_tar(path: Path) -> bytes:
    """The bench's files as a tar: from a folder, a tar file, or a bare git directory's HEAD."""
    if path.is_file():
        return path.read_bytes()
    if (path / "docker-bench-security.sh").is_file():
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for item in sorted(path.rglob("*")):
                rel = item.relative_to(path)
                if rel.parts[0] != ".git" and (item.is_file() or item.is_dir()):
                    tar.add(item, arcname=str(rel), recursive=False)
        return out.getvalue()
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return subprocess.run(["git", f"--git-dir={path}", "archive", "--format=tar", "HEAD"],
                              capture_output=True, check=True).stdout
    raise SystemExit(f"--bench {path}: not a docker-bench-security folder, tar or git directory")


def remote_script(include: str) -> str:
    inc = f" -i {shlex.quote(include)}" if include else ""
    return ('set -e; d=$(mktemp -d); trap \'rm -rf "$d"\' EXIT; tar -x -C "$d"; cd "$d"; '
            f'bash ./docker-bench-security.sh -b -c container_runtime -l "$d/bench.log"{inc}')


def run_bench(tar: bytes, via: list[str], include: str, timeout: float) -> str:
    argv = [*via, "sh", "-c", remote_script(include)]
    done = subprocess.run(argv, input=tar, capture_output=True, timeout=timeout, check=False)
    text = done.stdout.decode(errors="replace")
    if done.returncode != 0 or not re.search(r"^\[\w+\]\s+5\.\d+ - ", _ANSI.sub("", text), re.MULTILINE):
        sys.stderr.write(done.stderr.decode(errors="replace")[-2000:])
        raise SystemExit(2)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", type=Path, help="docker-bench-security: folder, tar, or bare git directory")
    ap.add_argument("--via", default="", help="command prefix that runs `sh` where the engine is "
                    "(e.g. 'docker exec -i opskit-vps'); empty: here")
    ap.add_argument("--include", default="", help="only containers whose names match (docker-bench's -i)")
    ap.add_argument("--raw", type=Path, help="also write docker-bench's whole output here")
    ap.add_argument("--parse", type=Path, help="read a saved output instead of running the bench")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args(argv)
    if args.parse:
        text = args.parse.read_text()
    elif args.bench:
        text = run_bench(bench_tar(args.bench.expanduser()), shlex.split(args.via), args.include, args.timeout)
    else:
        ap.error("give --bench (to run it) or --parse (a saved output)")
    if args.raw:
        args.raw.write_text(text)
    report = parse(text)
    print(summary(report))
    return 1 if undocumented(report) else 0


if __name__ == "__main__":
    sys.exit(main())
