"""The one place where steps touch the world: local processes, the SSH connection, files.

The runner executes a plan in order, prints progress a person can follow, stops at the first
failure and raises `StepFailed` naming the step and the tail of its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import CommandTimeout, ConnectionLost, OpskitError, StepFailed
from .secrets import Secret, reveal
from . import ship
from .steps import BRANCHES, SERVER, Beside, Check, Phase, Plan, Run, ShipImage, WriteFile


@dataclass
class StepResult:
    step: object
    seconds: float
    output: str = ""


class Runner:
    """Executes plans. `connection` (an `ssh.Connection`) is needed only for server steps."""

    def __init__(self, connection=None, dry_run: bool = False, out=None, verbose: bool = False):
        self.connection = connection
        self.dry_run = dry_run
        self.out = out or sys.stderr
        self.verbose = verbose
        self.results: list[StepResult] = []
        self.bytes_shipped = 0  # compressed bytes on the wire
        self.layers_loaded: set = set()  # diff IDs this run has put on the server
        self.reached = Phase.NONE  # the furthest phase of a step of the last plan run started
        self._reached_lock = threading.Lock()
        self._mark = _Mark()  # a branch's mark on its progress lines (`Beside`), per thread

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self, plan: Plan) -> list[StepResult]:
        if self.dry_run:
            self.say(plan.render() + "\n(dry run: nothing was changed)")
            return []
        results: list[StepResult] = []
        self.reached = Phase.NONE
        total, number = len(plan), 0
        for step in plan.steps:
            if isinstance(step, Beside):
                self._beside(step, number, total, results)
                number += len(step.leaves())
            else:
                number += 1
                self._one(step, f"[{number}/{total}]", results)
        return results

    def _one(self, step, label: str, results: list) -> None:
        self.say(f"==> {label} {step.title}")
        if self.verbose:
            self.say(f"    {step.describe()}")
        with self._reached_lock:
            self.reached = max(self.reached, step.phase)
        started = time.monotonic()
        try:
            output = self._execute(step)
        except ConnectionLost as lost:
            raise ConnectionLost(f"{lost} during step `{step.title}`", step) from lost
        except CommandTimeout as late:
            raise StepFailed(step, None, str(late)) from late
        result = StepResult(step, time.monotonic() - started, output)
        results.append(result)
        self.results.append(result)  # kept as they finish: a failed run still shows its timings
        if result.seconds >= 2:
            self.say(f"    {self._mark.text}done in {result.seconds:.1f}s")

    def _beside(self, step: Beside, before: int, total: int, results: list) -> None:
        """Each branch in a thread of its own; after a failure the others start no further step,
        and once all have stopped, the first failure is raised."""
        failures: list = []
        self.say(f"==> {step.title}, side by side: "
                 + "; ".join(f"{letter}) {len(branch)} step(s)" for letter, branch in zip(BRANCHES, step.branches)))

        def branch(letter: str, first: int, steps: tuple) -> None:
            self._mark.text = f"{letter}| "
            try:
                for n, inner in enumerate(steps, first):
                    if failures:
                        return
                    self._one(inner, f"[{n}/{total}] {letter}|", results)
            except BaseException as failed:  # noqa: BLE001 (raised again, in the plan's thread)
                failures.append(failed)

        threads, first = [], before + 1
        for letter, steps in zip(BRANCHES, step.branches):
            threads.append(threading.Thread(target=branch, args=(letter, first, steps), daemon=True))
            first += len(steps)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]

    def quietly(self, step) -> str | None:
        """Run one step with no progress lines and no exception (background upkeep, such as the
        lock's lease): its output, or None when it failed."""
        if self.dry_run:
            return None
        try:
            return self._execute(step)
        except OpskitError:
            return None

    # -- dispatch -------------------------------------------------------------------------------

    def _execute(self, step) -> str:
        if isinstance(step, Run):
            return self._run(step)
        if isinstance(step, Check):
            return self._check(step)
        if isinstance(step, WriteFile):
            return self._write(step)
        if isinstance(step, ShipImage):
            return self._ship(step)
        raise OpskitError(f"the runner does not know the step type {type(step).__name__}")

    def _echo(self, line: str) -> None:
        self.say(f"    {self._mark.text}{line}")

    def _run(self, step: Run) -> str:
        mask = _masker(step)
        on_line = (lambda line: self._echo(mask(line))) if step.stream else None
        stdin = reveal(step.stdin).encode() if isinstance(step.stdin, Secret) else step.stdin
        if step.on == SERVER:
            done = self._server().run([reveal(a) for a in step.argv], stdin=stdin,
                                      timeout=step.timeout, on_line=on_line)
            code, output = done.returncode, done.output
        else:
            code, output = self._local(step, stdin, on_line)
        if code != 0:
            raise StepFailed(step, code, mask(output))
        return output

    def _local(self, step: Run, stdin: bytes | None, on_line) -> tuple[int, str]:
        """Run a local program to its end (or its timeout, silent or not); (exit code, output)."""
        env = dict(os.environ)
        env.update({k: reveal(v) for k, v in step.env})
        argv = [reveal(a) for a in step.argv]
        mask = _masker(step)
        try:
            proc = subprocess.Popen(
                argv, cwd=step.cwd, env=env,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
        except FileNotFoundError as exc:
            raise StepFailed(step, None, mask(f"{argv[0]}: program not found ({exc})")) from exc
        except OSError as exc:  # not executable
            raise StepFailed(step, None, mask(f"{argv[0]}: cannot run it ({exc})")) from exc
        lines: list[str] = []

        def read() -> None:  # a thread of its own: the timeout holds for a silent program too
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if on_line:
                    on_line(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if stdin is not None:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:  # it exited without reading: its exit code says why
                pass
        try:
            code = proc.wait(timeout=step.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            reader.join(5)
            raise StepFailed(step, None, mask("\n".join(lines) + f"\n(timed out after {step.timeout:g}s)")) from None
        reader.join()
        return code, "\n".join(lines)

    def _check(self, step: Check) -> str:
        mask = _masker(step)
        if step.on == SERVER:
            done = self._server().run([reveal(a) for a in step.argv], timeout=60)
            code, output, stdout = done.returncode, done.output, done.stdout.decode(errors="replace")
        else:
            argv = [reveal(a) for a in step.argv]
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            except FileNotFoundError as exc:
                raise StepFailed(step, None, mask(f"{argv[0]}: program not found ({exc})")) from exc
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise StepFailed(step, None, mask(f"{argv[0]}: {exc}")) from exc
            code, output, stdout = proc.returncode, proc.stdout + proc.stderr, proc.stdout
        if code != 0 or (step.expect is not None and step.expect not in stdout):
            hint = f"\nhint: {step.hint}" if step.hint else ""
            raise StepFailed(step, code, mask(output) + hint)
        return output

    def _write(self, step: WriteFile) -> str:
        data = reveal(step.content).encode() if isinstance(step.content, Secret) else step.content
        if step.on == SERVER:
            self._server().write_file(step.path, data, step.mode)
        else:
            write_local(Path(step.path), data, step.mode)
        return ""

    def _ship(self, step: ShipImage) -> str:
        diff_ids = self._diff_ids(step)
        skip = step.skip | self.layers_loaded  # an earlier image of this run may share layers
        df = self._server().run(ship.FREE_SPACE, timeout=60).stdout.decode(errors="replace") if step.margin_mb else ""
        room = ship.room_for_layers(df, step.margin_mb) if step.margin_mb else None
        if step.margin_mb and room is None:
            raise StepFailed(step, None, ship.room_problem(df, 0, step.margin_mb, step.image))
        counts = {}
        with tempfile.TemporaryFile() as errors:
            # straight from the engine into the filter: no copy of the whole image on disk here
            save = subprocess.Popen(["docker", "save", step.image], stdout=subprocess.PIPE, stderr=errors)

            def feed(out):
                wire = ship.Gzip(_Progress(out, self._echo))
                counts["sent"], counts["left_out"], counts["layers"] = ship.stream(save.stdout, diff_ids, skip, wire,
                                                                                   room)
                wire.close()
                counts["wire"] = wire.compressed

            try:
                done = self._server().run(["docker", "load"], stdin=feed, timeout=1800)
            except ship.NoRoom as full:  # the unfinished tar made `docker load` fail: nothing loaded
                raise StepFailed(step, None, ship.room_problem(df, full.need, step.margin_mb, step.image)) from None
            except tarfile.TarError as broken:
                raise StepFailed(step, save.wait() or None, f"docker save {step.image} broke off ({broken}): "
                                 + _tail(errors)) from None
            finally:
                save.stdout.close()
                if save.poll() is None:
                    save.kill()
            if save.wait() != 0:
                raise StepFailed(step, save.returncode, f"docker save {step.image} failed: " + _tail(errors))
        if done.returncode != 0:
            raise StepFailed(step, done.returncode, done.output)
        self.layers_loaded |= counts["layers"]
        self.bytes_shipped += counts["wire"]
        summary = (f"{counts['sent'] / 1e6:.1f} MB of layers sent as {counts['wire'] / 1e6:.1f} MB (gzip), "
                   f"{counts['left_out'] / 1e6:.1f} MB the server already had left out")
        self._echo(summary)
        return done.output + summary

    @staticmethod
    def _diff_ids(step: ShipImage) -> list[str]:
        """The image's layers here, bottom first (what the save's layer blobs are known by)."""
        seen = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", step.image],
                              capture_output=True, text=True)
        if seen.returncode != 0:
            raise StepFailed(step, seen.returncode, seen.stderr.strip() or f"no image {step.image} here")
        return json.loads(seen.stdout) or []

    def _server(self):
        if self.connection is None:
            raise OpskitError("this plan has server steps but the runner has no SSH connection")
        return self.connection


class _Mark(threading.local):
    text = ""


class _Progress:
    """Passes bytes through and says how far it got every 64 MB."""

    STEP = 64 * 1024 * 1024

    def __init__(self, out, say):
        self.out, self.say, self.total, self.next = out, say, 0, self.STEP

    def write(self, data) -> int:
        self.out.write(data)
        self.total += len(data)
        if self.total >= self.next:
            self.say(f"{self.total / 1e6:.0f} MB sent")
            self.next += self.STEP
        return len(data)

    def flush(self) -> None:
        pass


def _masker(step):
    """A function that replaces, in a text, every secret value the step carries with ***: what a
    failing command echoes of its own arguments, environment or input never reaches a log."""
    values = [reveal(v) for v in (*step.argv, *(v for _, v in getattr(step, "env", ())), getattr(step, "stdin", None))
              if isinstance(v, Secret)]
    values = sorted({v for v in values if v}, key=len, reverse=True)

    def mask(text: str) -> str:
        for value in values:
            text = text.replace(value, "***")
        return text
    return mask


def write_local(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomic local write: the mode is set before the content lands, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _tail(errors) -> str:
    """The last lines a program wrote to the file `errors`."""
    errors.seek(0)
    return errors.read().decode(errors="replace").strip()[-1000:]
