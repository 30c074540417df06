"""The deploy lock on the server: one folder, taken atomically, naming its holder and its deploy id,
with a lease its holder renews while it works. A lock whose lease ran out is stale: its holder is
gone, and `--break-lock` breaks it at once; a live holder's lock is never broken.

The lock is a folder made whole beside its place (`info` inside) and renamed into it: rename(2)
onto an existing, non-empty folder fails, so of deploys racing here exactly one wins, and a reader
never sees a lock without its holder.
"""

from __future__ import annotations

import getpass
import json
import shlex
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field

from .facts.release import parse_lock
from .layout import Layout
from .steps import SERVER, Run

#: the lock step's exit code when another deploy holds the lock (EX_TEMPFAIL)
LOCK_HELD = 75
#: a holder renews its lease this often; a lease not renewed for LEASE_S means the holder is gone
RENEW_EVERY_S = 20
LEASE_S = 90
HELD_PREFIX = "deploy lock held by: "


@dataclass(frozen=True)
class Holder:
    """Who deploys: a person or CI job on a machine, and one deploy id per run."""

    who: str = field(default_factory=lambda: f"{getpass.getuser()}@{socket.gethostname()}")
    deploy_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def info(holder: Holder, release_id: str, now: float | None = None) -> str:
    return json.dumps({"holder": holder.who, "deploy_id": holder.deploy_id, "since": int(now or time.time()),
                       "release": release_id}, sort_keys=True)


def acquire(layout: Layout, holder: Holder, release_id: str, breaking: bool = False) -> Run:
    """Take the lock, or exit LOCK_HELD naming who holds it (`breaking` removes a stale one first)."""
    lock, info_file = shlex.quote(layout.lock), shlex.quote(layout.lock_info)
    new = shlex.quote(f"{layout.lock}.{holder.deploy_id}")
    script = (f"mkdir -p {shlex.quote(layout.releases)} && rm -rf {new} && mkdir -m 0700 {new} && "
              f"printf '%s\\n' {shlex.quote(info(holder, release_id))} > {new}/info && "
              + (f"rm -rf {lock} && " if breaking else "")
              + f"if mv -T {new} {lock} 2>/dev/null; then exit 0; fi; rm -rf {new}; "
              f"echo \"{HELD_PREFIX}$(cat {info_file} 2>/dev/null)\" >&2; exit {LOCK_HELD}")
    return Run("take the deploy lock" + (" (breaking a stale one)" if breaking else ""), ["sh", "-c", script],
               on=SERVER)


def release(layout: Layout) -> Run:
    return Run("release the deploy lock", ["rm", "-rf", "--", layout.lock], on=SERVER)


def renew(layout: Layout, holder: Holder) -> Run:
    """Renew the lease (the info file's time), only while the lock is still this deploy's."""
    mark = f'"deploy_id": "{holder.deploy_id}"'
    return Run("renew the deploy lock's lease",
               ["sh", "-c", f"grep -qF {shlex.quote(mark)} {shlex.quote(layout.lock_info)} && "
                            f"touch {shlex.quote(layout.lock_info)}"], on=SERVER, timeout=30)


def holder_named(stderr: str) -> str:
    """The holder a refused lock step named, in words."""
    text = next((line[len(HELD_PREFIX):] for line in stderr.splitlines() if line.startswith(HELD_PREFIX)), "")
    found = parse_lock(text)
    return found.describe() if found else "another deploy (it had not named itself yet)"


def problems(lock, now: float, breaking: bool) -> list[str]:
    """Why a deploy may not take the lock now (empty when it may): a live holder is waited for; a
    stale lock (its lease ran out) is broken only with --break-lock, and then at once."""
    if lock is None:
        return []
    idle = lock.idle(now)
    if idle is not None and idle <= LEASE_S:
        what = f"a deploy is in progress: lock held by {lock.describe()}, its lease renewed {idle:.0f} s ago"
        return [what + ("; it is alive, so --break-lock leaves it" if breaking else "; wait for it to finish")]
    if breaking:
        return []
    age = "" if idle is None else f" (its lease ran out {idle - LEASE_S:.0f} s ago)"
    return [f"a stale deploy lock is left by {lock.describe()}{age}: its holder is gone; "
            "deploy again with --break-lock"]


class Lease:
    """Renews the lock's lease in the background while a deploy runs; a renewal that fails (a lost
    link) is retried at the next tick, and the lease simply runs out if the deploy died."""

    def __init__(self, runner, layout: Layout, holder: Holder):
        self.step, self.runner = renew(layout, holder), runner
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="opskit-lease", daemon=True)

    def __enter__(self) -> "Lease":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(5)

    def _loop(self) -> None:
        while not self.stopped.wait(RENEW_EVERY_S):
            self.runner.quietly(self.step)
