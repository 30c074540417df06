"""The skip gate (tests/skipgate.py) on small suites run by pytester: an unlisted skip fails the
session, a listed one does not, the smoke suite is exempt, and "no tests" still fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.skipgate import ALLOW_LIST, read_allow_list

SKIPPING = """
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("no widget here")
"""


@pytest.fixture
def suite(pytester):
    """A tests/ folder that loads the gate the way ours does, with an empty allow-list."""
    pytester.makeconftest('pytest_plugins = ["tests.skipgate"]')
    pytester.path.joinpath("allowed.txt").write_text("# nothing expected\n")
    pytester.mkdir("tests")
    return pytester


def run(pytester, *args):
    return pytester.runpytest("--skips-allowed", str(pytester.path / "allowed.txt"), "-p", "no:cacheprovider", *args)


def test_an_unlisted_skip_fails_the_session_naming_the_test_and_its_reason(suite):
    suite.path.joinpath("tests/test_gate_a.py").write_text(SKIPPING)
    result = run(suite)
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*1 unexpected skip(s): the session fails*",
                                 "SKIPPED tests/test_gate_a.py::test_skips: no widget here (*test_gate_a.py:8)"])


def assert_gate_quiet(result, code, **outcomes) -> None:
    result.assert_outcomes(**outcomes)
    assert result.ret == code and "unexpected skip" not in result.stdout.str()


def test_a_listed_skip_passes(suite):
    suite.path.joinpath("tests/test_gate_b.py").write_text(SKIPPING)
    suite.path.joinpath("allowed.txt").write_text(
        "# comment\ntests/test_gate_b.py::test_sk*  widgets never exist in CI (they are a paid add-on)\n")
    assert_gate_quiet(run(suite), pytest.ExitCode.OK, passed=1, skipped=1)


def test_skips_by_marker_by_fixture_and_of_a_whole_module_are_all_caught(suite):
    suite.path.joinpath("tests/test_gate_c.py").write_text(
        "import pytest\n\n"
        "@pytest.fixture\ndef engine():\n    pytest.skip('no engine')\n\n"
        "def test_fixture(engine):\n    pass\n\n"
        "@pytest.mark.skipif(True, reason='decided at import')\ndef test_marker():\n    pass\n")
    suite.path.joinpath("tests/test_gate_d.py").write_text(
        "import pytest\npytest.skip('whole module', allow_module_level=True)\n\ndef test_never():\n    pass\n")
    result = run(suite)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*3 unexpected skip(s)*"])
    for line in ("SKIPPED tests/test_gate_c.py::test_fixture: no engine*",
                 "SKIPPED tests/test_gate_c.py::test_marker: decided at import*",
                 "SKIPPED tests/test_gate_d.py: whole module*"):
        result.stdout.fnmatch_lines([line])


def test_a_failing_session_stays_failing_and_xfail_is_not_a_skip(suite):
    suite.path.joinpath("tests/test_gate_e.py").write_text(
        "import pytest\n\n@pytest.mark.xfail(strict=True)\ndef test_known_bug():\n    assert False\n\n"
        "def test_fails():\n    assert False\n")
    assert_gate_quiet(run(suite), pytest.ExitCode.TESTS_FAILED, failed=1, xfailed=1)


def test_no_tests_collected_still_exits_5(suite):
    suite.path.joinpath("tests/test_gate_f.py").write_text("def helper():\n    pass\n")
    assert run(suite).ret == pytest.ExitCode.NO_TESTS_COLLECTED
    suite.path.joinpath("tests/test_gate_f.py").write_text(SKIPPING)
    assert run(suite, "-k", "nothing_matches").ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_the_smoke_suite_may_skip_with_its_reason(suite):
    """tests/smoke/ runs against any server: a reasoned skip there is an answer, not a hole."""
    suite.mkdir("tests/smoke")
    suite.path.joinpath("tests/smoke/test_gate_smoke.py").write_text(SKIPPING)
    result = run(suite, "tests/smoke")
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK


def test_the_gate_works_in_a_real_subprocess_too(suite, monkeypatch):
    """What `invoke test` sees: the exit status of a separate `python -m pytest`."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))  # our `tests` package
    suite.path.joinpath("tests/test_gate_g.py").write_text(SKIPPING)
    result = suite.runpytest_subprocess("--skips-allowed", str(suite.path / "allowed.txt"), "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIPPED tests/test_gate_g.py::test_skips: no widget here*"])


def test_an_entry_without_a_reason_is_refused(suite):
    suite.path.joinpath("tests/test_gate_h.py").write_text(SKIPPING)
    suite.path.joinpath("allowed.txt").write_text("tests/test_gate_h.py::test_skips\n")
    result = run(suite)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*allowed.txt:1: `tests/test_gate_h.py::test_skips` has no reason*"])


def test_our_allow_list_reads_and_every_entry_has_a_reason():
    assert all(entry.reason for entry in read_allow_list(ALLOW_LIST))
