"""The guard's command line, run by the deploy plan's `guard_step`:
`python -m opskit.prisma IMAGE [--command JSON] [--healthcheck JSON]`.

Exit 0: accepted; 1: refused (each violation printed with its chain and the fix); 2: the image
could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import OpskitError
from .guard import MODULE, check_image, explain


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description="Refuse an image that would run `prisma migrate` or `prisma db push`.")
    parser.add_argument("image")
    parser.add_argument("--command", help="the compose command, as a JSON list")
    parser.add_argument("--healthcheck", help="the healthcheck test, as a JSON list")
    args = parser.parse_args(argv)
    try:
        found = check_image(args.image, json.loads(args.command) if args.command else None,
                            json.loads(args.healthcheck) if args.healthcheck else None)
    except OpskitError as exc:
        print(f"prisma guard: {exc}", file=sys.stderr)
        return 2
    print(explain(args.image, found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
