"""Every error opskit raises on purpose, and the exit codes that README documents.

One root (`OpskitError`); each subclass carries its exit code, so `tasks.py` turns any of them into
its message and code, and CI can tell a bad input from a failed action.
"""

from __future__ import annotations

#: exit code -> what it means (README's table is this one)
EXIT_CODES = {
    1: "an error with no more specific code (or the operator cancelled)",
    2: "a bad inventory, template, secret or flag: nothing was written or connected",
    3: "a step of the plan failed; the recovery ran",
    4: "the server cannot be reached, the link broke mid-deploy (the recovery ran once it was back), "
       "or the server shows a host key that is not the pinned one",
    5: "refused before anything changed (lock held, no Docker, disk full, nothing to roll back to)",
    6: "deployed, but the smoke suite fails",
}
EXIT_ERROR, EXIT_BAD_INPUT, EXIT_STEP_FAILED, EXIT_UNREACHABLE, EXIT_REFUSED, EXIT_SMOKE_FAILED = 1, 2, 3, 4, 5, 6


class OpskitError(Exception):
    """Root of every error opskit raises on purpose. Its message is meant for a person.
    A subclass names its exit code in its header: `class X(OpskitError, exit_code=EXIT_...)`."""

    exit_code = EXIT_ERROR

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class InventoryError(OpskitError, ValueError, exit_code=EXIT_BAD_INPUT):
    """The inventory is invalid. Holds every problem found, each naming its key path."""

    def __init__(self, problems: list[str], source: str = "inventory.yaml"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(f"{source}: {count} problem{'s' if count != 1 else ''}:\n{lines}")


class SecretError(InventoryError):
    """A secret reference that cannot be resolved (missing variable, file or key)."""


class RenderError(OpskitError, exit_code=EXIT_BAD_INPUT):
    """A template failed to render; names the template, line and the undefined name."""


class UsageError(OpskitError, exit_code=EXIT_BAD_INPUT):
    """A task was called with flags or arguments that cannot work together; says which."""


class StepFailed(OpskitError, exit_code=EXIT_STEP_FAILED):
    """A step of a plan failed. Carries the step and the tail of its output."""

    def __init__(self, step, returncode: int | None, output: str = ""):
        self.step = step
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-25:])
        where = f" (exit {returncode})" if returncode is not None else ""
        detail = f"\n{tail}" if tail else ""
        super().__init__(f"step failed{where}: {step.describe()}{detail}")


class ConnectionFailed(OpskitError, exit_code=EXIT_UNREACHABLE):
    """The server could not be reached, or it showed a host key that is not the pinned one."""


class AuthenticationRefused(ConnectionFailed):
    """The server answered, with the pinned host key, and refused the login."""


class ConnectionLost(ConnectionFailed):
    """The SSH link broke while a step ran; names the step (None: between steps)."""

    def __init__(self, message: str, step=None):
        self.step = step
        super().__init__(message)


class CommandTimeout(OpskitError, exit_code=EXIT_STEP_FAILED):
    """A command on the server ran past its time limit (it was stopped)."""


class DeployRefused(OpskitError, exit_code=EXIT_REFUSED):
    """A preflight check said no (lock held, no Docker, disk full): nothing was changed."""


class GatherError(OpskitError):
    """A fact could not be read from the server; says which command failed and why."""


class GuardError(OpskitError):
    """The prisma guard could not read an image (missing, or docker failed)."""


class KitError(OpskitError):
    """The image kit cannot be built here; the message says what is missing and how to get it."""


class VpsError(OpskitError):
    """The simulated VPS cannot be made or reached; the message says why and what to do."""


class ProvisionRefused(OpskitError, exit_code=EXIT_REFUSED):
    """Provisioning will not start: the change would lock someone out, or the host is not one it knows."""


class NotConverged(OpskitError, exit_code=EXIT_STEP_FAILED):
    """Provisioning ran its steps, and reading the server again still finds differences."""
