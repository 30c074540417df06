"""`python -m opskit.provision.prove HOST PORT USER KEY KNOWN_HOSTS`: a NEW SSH login, with the
pinned host key, that must run `sudo -n true` as USER. It is how provisioning proves, before it
lets go of the connection it has, that a change to sshd or the firewall has not locked anyone out.
It uses the same SSH client as every opskit command (paramiko), so what it proves is what the next
`invoke deploy` needs. Exit 0 when the login works, 1 with the reason when it does not."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import OpskitError
from ..ssh import Connection, Target


def main(argv: list[str]) -> int:
    host, port, user, key, known_hosts = argv
    target = Target(host, int(port), user, Path(key), Path(known_hosts))
    try:
        with Connection(target, timeout=20) as conn:
            done = conn.run(["sudo", "-n", "true"], timeout=30)
    except OpskitError as exc:
        print(f"a new login as {user} fails: {exc}", file=sys.stderr)
        return 1
    if done.returncode != 0:
        print(f"{user} logs in but `sudo -n true` fails: {done.output.strip()[-300:]}", file=sys.stderr)
        return 1
    print(f"a new login as {user}@{host}:{port} works, with sudo")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
