"""The runner on local steps (no server): exit codes, output read to its end, timeouts, a missing
program, checks with `expect`, and secrets that never show in what it prints or raises.
Server steps go through a tiny fake connection only to see what the runner hands the transport."""

from __future__ import annotations

import hashlib
import io
import sys
import time

import pytest

from opskit.errors import OpskitError, StepFailed
from opskit.runner import Runner
from opskit.secrets import Secret
from opskit.ssh import Completed
from opskit.steps import LOCAL, SERVER, Beside, Check, Phase, Plan, Run, WriteFile

PY = sys.executable
#: values that must never be printed; distinct enough that a leak cannot be a coincidence
PASSWORD = "pw-7f3a9c1e-never-printed"
TOKEN = "tok-b62d04e8-never-printed"


def quiet() -> Runner:
    return Runner(out=io.StringIO())


def printed(runner: Runner) -> str:
    return runner.out.getvalue()


# -- exit codes --------------------------------------------------------------------------------------


def test_a_command_that_exits_0_returns_its_output():
    assert quiet().run(Plan("p", [Run("ok", ["sh", "-c", "echo hello; echo world >&2"])]))[0].output == "hello\nworld"


@pytest.mark.parametrize("code", [1, 3, 75, 255])
def test_a_failing_command_raises_step_failed_with_its_exit_code(code):
    step = Run("fails", ["sh", "-c", f"echo about to fail; exit {code}"])
    runner = quiet()
    with pytest.raises(StepFailed) as info:
        runner.run(Plan("p", [step]))
    assert info.value.returncode == code and info.value.step is step
    assert f"(exit {code})" in str(info.value) and "about to fail" in str(info.value)


def test_the_run_stops_at_the_first_failure():
    steps = [Run("first", ["true"]), Run("second", ["false"]), Run("third", ["true"])]
    runner = quiet()
    with pytest.raises(StepFailed) as info:
        runner.run(Plan("p", steps))
    assert info.value.step is steps[1]
    assert [r.step.title for r in runner.results] == ["first"]
    assert "third" not in printed(runner)


def test_a_command_killed_by_a_signal_is_a_failure():
    with pytest.raises(StepFailed) as info:
        quiet().run(Plan("p", [Run("killed", ["sh", "-c", "kill -9 $$"])]))
    assert info.value.returncode not in (0, None)


# -- output ------------------------------------------------------------------------------------------


def test_output_is_read_to_the_end_of_a_command_that_prints_a_lot_then_exits():
    script = "import sys\nfor i in range(200000): print(f'line {i}')\nprint('the end', file=sys.stderr)\nsys.exit(4)"
    with pytest.raises(StepFailed) as info:
        quiet().run(Plan("p", [Run("chatty", [PY, "-c", script])]))
    lines = info.value.output.splitlines()
    assert len(lines) == 200001 and lines[0] == "line 0" and lines[199999] == "line 199999"
    assert lines[-1] == "the end" and info.value.returncode == 4
    assert str(info.value).endswith("line 199999\nthe end")  # the message keeps the tail


def test_output_without_a_final_newline_is_kept():
    assert quiet().run(Plan("p", [Run("no newline", ["printf", "a\\nlast"])]))[0].output == "a\nlast"


def test_stdin_reaches_the_command():
    step = Run("feed", [PY, "-c", "import sys; print(sys.stdin.read().upper())"], stdin=b"fed on stdin")
    assert quiet().run(Plan("p", [step]))[0].output == "FED ON STDIN"


def test_a_streamed_step_prints_its_lines_as_they_come():
    runner = quiet()
    runner.run(Plan("p", [Run("stream", ["sh", "-c", "echo one; echo two"], stream=True)]))
    assert "    one\n    two\n" in printed(runner)


# -- timeouts ----------------------------------------------------------------------------------------


def test_a_chatty_command_past_its_timeout_is_stopped():
    step = Run("slow", ["sh", "-c", "for i in $(seq 100); do echo tick; sleep 0.1; done"], timeout=1)  # 10 s
    started = time.monotonic()
    with pytest.raises(StepFailed) as info:
        quiet().run(Plan("p", [step]))
    assert time.monotonic() - started < 5
    assert info.value.returncode is None and "(timed out after 1s)" in str(info.value)


def test_a_silent_command_past_its_timeout_is_stopped():
    started = time.monotonic()
    with pytest.raises(StepFailed) as info:
        quiet().run(Plan("p", [Run("silent", ["sleep", "4"], timeout=1)]))
    assert time.monotonic() - started < 3
    assert "timed out after 1s" in str(info.value)


# -- a missing program ---------------------------------------------------------------------------------


def test_a_missing_program_is_a_step_failure_naming_it():
    with pytest.raises(StepFailed) as info:
        quiet().run(Plan("p", [Run("ghost", ["opskit-no-such-program", "--x"])]))
    assert info.value.returncode is None
    assert "opskit-no-such-program: program not found" in str(info.value)


def test_a_check_of_a_missing_program_is_a_step_failure_too():
    with pytest.raises(StepFailed):
        quiet().run(Plan("p", [Check("ghost", ["opskit-no-such-program"], on=LOCAL)]))


# -- checks ------------------------------------------------------------------------------------------


def test_a_check_passes_when_it_exits_0_and_prints_what_is_expected():
    assert "ready" in quiet().run(Plan("p", [Check("up", ["echo", "status: ready"], on=LOCAL, expect="ready")]))[0].output


def test_a_check_fails_when_the_expected_text_is_missing_and_gives_its_hint():
    step = Check("up", ["echo", "status: starting"], on=LOCAL, expect="ready", hint="wait for it")
    with pytest.raises(StepFailed) as info:
        quiet().run(Plan("p", [step]))
    assert info.value.returncode == 0 and "status: starting" in str(info.value) and "hint: wait for it" in str(info.value)


def test_a_check_reads_expect_from_stdout_only():
    step = Check("up", ["sh", "-c", "echo ready >&2"], on=LOCAL, expect="ready")
    with pytest.raises(StepFailed):
        quiet().run(Plan("p", [step]))


def test_a_check_that_exits_non_zero_fails_even_when_it_prints_the_expected_text():
    step = Check("up", ["sh", "-c", "echo ready; exit 2"], on=LOCAL, expect="ready")
    with pytest.raises(StepFailed) as info:
        quiet().run(Plan("p", [step]))
    assert info.value.returncode == 2


# -- files -------------------------------------------------------------------------------------------


def test_a_local_file_is_written_with_its_mode_and_a_secret_is_written_revealed(tmp_path):
    target = tmp_path / "sub" / "api.env"
    quiet().run(Plan("p", [WriteFile("env", str(target), Secret(f"PASSWORD={PASSWORD}\n"), 0o600, on=LOCAL)]))
    assert target.read_text() == f"PASSWORD={PASSWORD}\n"
    assert target.stat().st_mode & 0o777 == 0o600


# -- secrets never show ------------------------------------------------------------------------------


def is_value(index: str, value: str) -> list:
    """argv that exits 0 only when its input (`argv` N, `env` NAME or `stdin`) is `value`; it holds
    the value's SHA-256, never the value."""
    digest = hashlib.sha256(value.encode()).hexdigest()
    read = {"argv": "sys.argv[1]", "stdin": "sys.stdin.read()"}.get(index, f"os.environ[{index!r}]")
    return [PY, "-c", f"import hashlib, os, sys; sys.exit(hashlib.sha256({read}.encode()).hexdigest() != {digest!r})"]


def secret_plan(tmp_path) -> Plan:
    """Every place a step can hold a secret: argv, env, stdin, file content. Each command checks
    that it received the revealed value."""
    password, token = Secret(PASSWORD, "db_password"), Secret(TOKEN, "api_token")
    return Plan("with secrets", [
        Run("argv", [*is_value("argv", PASSWORD), password]),
        Run("env", is_value("API_TOKEN", TOKEN), env=[("API_TOKEN", token)]),
        Run("stdin", is_value("stdin", PASSWORD), stdin=password),
        WriteFile("file", str(tmp_path / "secret.env"), Secret(f"TOKEN={TOKEN}"), 0o600, on=LOCAL),
        Check("check", [*is_value("argv", "something else"), token], on=LOCAL),
    ])


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text and TOKEN not in text
    assert "never-printed" not in text


def test_the_plan_really_holds_the_secrets_it_must_not_print(tmp_path):
    """The control for the tests below: each step gets the revealed value (the argv, env and stdin
    tests compare it inside the command; the Check fails on purpose because it is the token)."""
    plan = secret_plan(tmp_path)
    runner = quiet()
    with pytest.raises(StepFailed) as info:
        runner.run(plan)
    assert info.value.step is plan.steps[-1]
    assert (tmp_path / "secret.env").read_text() == f"TOKEN={TOKEN}"


def test_a_printed_plan_and_every_describe_hide_the_secrets(tmp_path):
    plan = secret_plan(tmp_path)
    text = plan.render()
    assert_no_secret(text)
    assert text.count("***") == 3  # argv, env, the check's argv
    assert "<stdin" in text and "secret content" in text
    for step in plan:
        assert_no_secret(step.describe())
        assert_no_secret(repr(step))


def test_a_dry_run_and_a_verbose_run_print_no_secret(tmp_path):
    dry = Runner(dry_run=True, out=io.StringIO())
    dry.run(secret_plan(tmp_path))
    assert "(dry run: nothing was changed)" in printed(dry)
    verbose = Runner(verbose=True, out=io.StringIO())
    with pytest.raises(StepFailed) as info:
        verbose.run(secret_plan(tmp_path))
    for text in (printed(dry), printed(verbose), str(info.value), repr(info.value.step)):
        assert_no_secret(text)


def test_a_step_failed_message_shows_no_secret_of_the_step(tmp_path):
    for step in secret_plan(tmp_path).steps[:3]:
        failing = Run(step.title, [*step.argv[:2], step.argv[2].replace("sys.exit(", "sys.exit(1 + "), *step.argv[3:]],
                      env=step.env, stdin=step.stdin)
        with pytest.raises(StepFailed) as info:
            quiet().run(Plan("p", [failing]))
        assert info.value.returncode == 1  # 1 + False: the value arrived, and the step failed anyway
        assert_no_secret(str(info.value))


def test_a_secret_echoed_by_a_failing_command_is_masked(tmp_path):
    step = Run("echoes", ["sh", "-c", 'echo "connecting with $1"; exit 1', "sh", Secret(PASSWORD)], stream=True)
    runner = quiet()
    with pytest.raises(StepFailed) as info:
        runner.run(Plan("p", [step]))
    assert_no_secret(str(info.value))
    assert_no_secret(printed(runner))


# -- server steps: what reaches the transport ----------------------------------------------------------


class FakeConnection:
    """Records what the runner hands the SSH transport and answers with a given exit code."""

    def __init__(self, returncode=0, stdout=b"", stderr=b""):
        self.calls = []
        self.answer = Completed(returncode, stdout, stderr)

    def run(self, argv, stdin=None, timeout=None, on_line=None):
        self.calls.append((list(argv), stdin, timeout))
        return self.answer


def test_a_server_step_goes_to_the_connection_with_its_secrets_revealed_there_only():
    connection = FakeConnection(stdout=b"done\n")
    runner = Runner(connection, out=io.StringIO())
    runner.run(Plan("p", [Run("remote", ["psql", "--set", Secret(PASSWORD)], on=SERVER, stdin=Secret(TOKEN),
                              timeout=30)]))
    assert connection.calls == [(["psql", "--set", PASSWORD], TOKEN.encode(), 30)]
    assert_no_secret(printed(runner))


def test_a_failing_server_step_raises_with_its_exit_code():
    runner = Runner(FakeConnection(returncode=5, stderr=b"no such container\n"), out=io.StringIO())
    with pytest.raises(StepFailed) as info:
        runner.run(Plan("p", [Run("remote", ["docker", "ps"], on=SERVER)]))
    assert info.value.returncode == 5 and "no such container" in str(info.value)


def test_a_server_check_compares_expect_with_the_servers_stdout():
    step = Check("running", ["docker", "inspect", "x"], expect="running", on=SERVER)
    Runner(FakeConnection(stdout=b"running\n"), out=io.StringIO()).run(Plan("p", [step]))
    with pytest.raises(StepFailed):
        Runner(FakeConnection(stdout=b"exited\n", stderr=b"running"), out=io.StringIO()).run(Plan("p", [step]))


def test_server_steps_without_a_connection_are_refused_before_running():
    with pytest.raises(OpskitError, match="has server steps but the runner has no SSH connection"):
        quiet().run(Plan("p", [Run("remote", ["true"], on=SERVER)]))


# -- steps side by side ---------------------------------------------------------------------------


def stamped(title: str, seconds: float, log, code: int = 0, phase=Phase.NONE) -> Run:
    """A local step that notes when it starts and ends in the file `log`."""
    return Run(title, ["sh", "-c", f'echo "start {title}" >> {log}; sleep {seconds}; echo "end {title}" >> {log}; '
                                   f'echo "{title} says hi"; exit {code}'], phase=phase)


def test_the_branches_of_a_beside_run_at_once_and_the_plan_goes_on_after_both(tmp_path):
    log = tmp_path / "log"
    runner = quiet()
    plan = Plan("p", [Beside("both", [[stamped("a1", 0.6, log)], [stamped("b1", 0.2, log), stamped("b2", 0.2, log)]]),
                      stamped("after", 0, log)])
    results = runner.run(plan)
    lines = log.read_text().splitlines()
    assert lines.index("start b1") < lines.index("end a1") and lines.index("start b2") < lines.index("end a1")
    assert lines[-2:] == ["start after", "end after"]
    assert sorted(r.step.title for r in results) == ["a1", "after", "b1", "b2"] == sorted(t.title for t in plan)
    out = printed(runner)
    assert "==> [1/4] a| a1" in out and "==> [2/4] b| b1" in out and "==> [3/4] b| b2" in out
    assert "==> [4/4] after" in out


def test_a_failure_in_one_branch_stops_the_others_at_their_next_step_and_is_raised_after_them(tmp_path):
    log = tmp_path / "log"
    runner = quiet()
    plan = Plan("p", [Beside("both", [[stamped("a1", 0.1, log, code=7, phase=Phase.SHIP)],
                                      [stamped("b1", 0.5, log, phase=Phase.CONFIG), stamped("b2", 0, log)]]),
                      stamped("after", 0, log)])
    with pytest.raises(StepFailed) as info:
        runner.run(plan)
    assert info.value.step.title == "a1" and info.value.returncode == 7
    lines = log.read_text().splitlines()
    assert "end b1" in lines and "start b2" not in lines and "start after" not in lines  # b1 ran to its end
    assert runner.reached == Phase.CONFIG  # what the recovery must undo: the step beside went further


def test_a_dry_run_lists_a_beside_with_its_branches(tmp_path):
    runner = Runner(dry_run=True, out=io.StringIO())
    runner.run(Plan("p", [Run("first", ["true"]), Beside("two things", [[Run("x", ["true"])],
                                                                         [Run("y", ["true"]), Run("z", ["true"])]])]))
    out = printed(runner)
    assert "plan p: 4 steps" in out and "two things, side by side:" in out
    assert "2. a| x [local]" in out and "3. b| y [local]" in out and "4. b| z [local]" in out
