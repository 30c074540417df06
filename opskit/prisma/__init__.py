"""The Prisma guard: a deploy refuses a frontend that would run `prisma migrate` or `prisma db push`.

Why: SQLAlchemy + Alembic own the schema (one tool owns DDL). Prisma compares its schema with
the database and "fixes" the difference, so against tables Alembic made it would drop or rewrite
them. The UI role cannot do DDL anyway (see postgres.py); this guard says no before the deploy,
in plain words, instead of a permission error in a crash-looping container.

What is followed is what actually runs: the image's ENTRYPOINT + CMD (or the compose command that
replaces CMD), into shell strings, package.json scripts and the image's own shell scripts.

    walker.py    the shell/npm/yarn/pnpm interpreter that finds the commands (pure)
    image.py     an image's config and files, through the docker SDK
    guard.py     the check, and `guard_step` for the deploy plan
    __main__.py  the command line that step runs: `python -m opskit.prisma IMAGE`
"""

from .guard import check_commands, check_image, check_image_config, effective_commands, explain, guard_step
from .image import CONTAINER_LABEL
from .walker import Violation

__all__ = ["CONTAINER_LABEL", "Violation", "check_commands", "check_image", "check_image_config",
           "effective_commands", "explain", "guard_step"]
