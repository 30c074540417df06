"""One root error and a few specific ones; each carries what an operator needs to act."""

from __future__ import annotations


class OpskitError(Exception):
    """Root of every error opskit raises on purpose. Its message is meant for a person."""

    #: process exit code that `tasks.py` uses, so CI can tell a bad input from a failed action
    exit_code = 1


class InventoryError(OpskitError, ValueError):
    """The inventory is invalid. Holds every problem found, each naming its key path."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str = "inventory.yaml"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"{source}: {count} problem{'s' if count != 1 else ''}:\n{lines}")


class SecretError(InventoryError):
    """A secret reference that cannot be resolved (missing variable, file or key)."""


class RenderError(OpskitError):
    """A template failed to render; names the template, line and the undefined name."""

    exit_code = 2


class StepFailed(OpskitError):
    """A step of a plan failed. Carries the step and the tail of its output."""

    exit_code = 3

    def __init__(self, step, returncode: int | None, output: str = ""):
        self.step = step
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-25:])
        where = f" (exit {returncode})" if returncode is not None else ""
        detail = f"\n{tail}" if tail else ""
        super().__init__(f"step failed{where}: {step.describe()}{detail}")


class ConnectionFailed(OpskitError):
    """The server could not be reached, or it showed a host key that is not the pinned one."""

    exit_code = 4
