"""A skip is a failure unless it is expected: a pytest plugin for the test tiers.

A skipped test is a test that did not run. After the run, every skip (a test's, a fixture's, a
whole module's) is looked up in the allow-list, `tests/skips-allowed.txt`: one line per expected
skip, a node-id pattern (fnmatch) and the reason it is true in every CI run. A skip not on the list
turns a passing session into a failing one (exit code 1), and the terminal names each such test
with the reason it gave. Nothing else changes: exit code 5 (no tests collected) stays 5, a failing
session stays failing, and xfail is not a skip.

The smoke suite (`tests/smoke/`) is exempt: it runs against any server, where a skip with its
reason is a legitimate answer. `tests/conftest.py` loads this plugin for every run under `tests/`,
the smoke suite's included (pytest loads the conftest of each parent folder), so the exemption is by
node id, not by which conftest is loaded.

    python -m pytest tests/unit tests/integration                  # gated
    python -m pytest ... --skips-allowed other.txt                 # another allow-list
    python -m pytest ... -p no:tests.skipgate                      # off (a local run without Docker)
    python -m pytest tests/integration -m "not docker"             # or deselect: not a skip
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import pytest

ALLOW_LIST = Path(__file__).with_name("skips-allowed.txt")
#: node-id prefixes the gate never applies to
EXEMPT = ("tests/smoke/",)

@dataclass(frozen=True)
class Allowed:
    pattern: str
    reason: str
    line: int

    def matches(self, nodeid: str) -> bool:
        return fnmatch.fnmatchcase(nodeid, self.pattern)


@dataclass(frozen=True)
class Skip:
    nodeid: str
    reason: str
    where: str  # file:line of the skip call, when pytest knows it


def read_allow_list(path: Path) -> list[Allowed]:
    """The entries of an allow-list: `<node-id pattern> <reason>` per line, `#` comments.
    An entry without a reason is refused: the reason is the point of the list."""
    entries, problems = [], []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition(" ")
        if not reason.strip():
            problems.append(f"{path}:{number}: `{pattern}` has no reason (write why this skip is expected in "
                            "every CI run after the pattern)")
        entries.append(Allowed(pattern, reason.strip(), number))
    if problems:
        raise pytest.UsageError("\n".join(problems))
    return entries


def pytest_addoption(parser):
    parser.getgroup("opskit skip gate").addoption(
        "--skips-allowed", dest="skips_allowed", default=str(ALLOW_LIST), metavar="FILE",
        help="allow-list of expected skips (node-id pattern and reason per line); any other skip fails "
             "the session (default: %(default)s)")


def pytest_configure(config):
    path = Path(config.getoption("skips_allowed"))
    if not path.is_file():
        raise pytest.UsageError(f"--skips-allowed: {path} does not exist")
    config.pluginmanager.register(SkipGate(read_allow_list(path), path), "opskit-skipgate")


def _skip_of(report) -> Skip:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, lineno, message = longrepr
        where = f"{path}:{lineno}"  # pytest's skip reports count lines from 1
    else:
        message, where = str(longrepr), ""
    return Skip(report.nodeid, str(message).removeprefix("Skipped: "), where)


def unexpected(skips: list[Skip], allowed: list[Allowed]) -> list[Skip]:
    """The skips that neither sit in an exempt folder nor match an allow-list entry."""
    return [s for s in skips
            if not s.nodeid.startswith(EXEMPT) and not any(a.matches(s.nodeid) for a in allowed)]


class SkipGate:
    """One session's skips (of tests, fixtures and whole modules), judged when it ends."""

    def __init__(self, allowed: list[Allowed], source: Path):
        self.allowed, self.source = allowed, source
        self.skips: list[Skip] = []
        self.found: list[Skip] = []

    def _record(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skips.append(_skip_of(report))

    def pytest_runtest_logreport(self, report):
        self._record(report)

    def pytest_collectreport(self, report):
        self._record(report)

    def pytest_sessionfinish(self, session, exitstatus):
        self.found = unexpected(self.skips, self.allowed)
        if self.found and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.found:
            return
        tr = terminalreporter
        tr.write_sep("=", f"{len(self.found)} unexpected skip(s): the session fails", red=True, bold=True)
        for skip in self.found:
            tr.write_line(f"SKIPPED {skip.nodeid}: {skip.reason}" + (f" ({skip.where})" if skip.where else ""))
        tr.write_line("A skipped test did not run. Make it run (build what it needs, or fail saying what is "
                      "missing), or, if the skip is true in every CI run, add `<node id pattern> <why>` to "
                      f"{self.source}.")
