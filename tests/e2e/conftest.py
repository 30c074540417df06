"""End-to-end fixtures: the simulated VPS with a deployed release, reached over its pinned SSH."""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass

import pytest

from opskit import inventory
from opskit.errors import OpskitError
from opskit.ssh import Completed, Connection
from tests.smoke.remote import Remote


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: needs the simulated VPS (invoke vps.up) with a deployed release")


@dataclass
class Deployed:
    """The simulated VPS as `invoke deploy` left it, with one SSH connection for the tests."""

    env: object
    connection: Connection
    manifest: dict
    path: str  # the current release's folder (the link resolved)

    def run(self, argv, stdin: bytes | None = None, timeout: float = 120, check: bool = True) -> Completed:
        # the smoke suite's runner: it reads to the channel's EOF, so no output goes missing
        done = Remote(self.connection).run(argv, stdin=stdin, timeout=timeout)
        if check and done.returncode != 0:
            command = argv if isinstance(argv, str) else shlex.join(argv)
            raise AssertionError(f"on the VPS, `{command[:300]}` exited {done.returncode}: {done.output[-1500:]}")
        return done

    def sh(self, script: str, **kw) -> Completed:
        return self.run(["sh", "-c", script], **kw)

    def compose(self, *args: str, files=()) -> list[str]:
        """`docker compose` on the current release's file (as the deploy ran it), plus `files`."""
        extra = [a for f in files for a in ("-f", f)]
        return ["docker", "compose", "--project-directory", self.path, "-f", f"{self.path}/docker-compose.yml",
                *extra, *args]

    def container(self, service: str) -> str:
        done = self.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.env.project}",
                         "--filter", f"label=com.docker.compose.service={service}",
                         "--filter", "label=com.docker.compose.oneoff=False"])
        ids = done.stdout.decode().split()
        assert ids, f"no container for service {service} on the VPS"
        return ids[0]

    def wait_healthy(self, timeout: float = 120) -> None:
        """Until every container of the project is running and healthy (after a state is restored)."""
        deadline = time.monotonic() + timeout
        fmt = "{{.Names}} {{.State}} {{.Status}}"
        while True:
            done = self.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.env.project}",
                             "--filter", "label=com.docker.compose.oneoff=False", "--format", fmt])
            rows = done.stdout.decode().splitlines()
            bad = [r for r in rows if " running " not in f" {r} " or "(healthy)" not in r]
            if rows and not bad:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the stack did not come back healthy within {timeout:.0f}s: {bad}")
            time.sleep(1)


@pytest.fixture(scope="session")
def deployed_local():
    """The `local` environment's simulated VPS with a current release; skips (saying why) when
    no VPS answers or nothing is deployed. Start one with `invoke vps.up`, then `invoke deploy`."""
    try:
        # OPSKIT_INVENTORY points the e2e tests (and the smoke runs they start) at another inventory
        env = inventory.load("local", path=os.environ.get("OPSKIT_INVENTORY"))
    except OpskitError as exc:
        pytest.skip(f"the local environment does not load: {exc}")
    connection = Connection(env.ssh, timeout=5)
    try:
        connection.open()
    except OpskitError as exc:
        pytest.skip(f"no simulated VPS answers at {env.ssh} ({exc}); start one with `invoke vps.up`")
    try:
        done = connection.run(["sh", "-c", f"readlink -f {shlex.quote(env.remote_dir)}/current && "
                                           f"cat {shlex.quote(env.remote_dir)}/current/manifest.json"], timeout=30)
        if done.returncode != 0:
            pytest.skip(f"the simulated VPS at {env.ssh} has no current release: run `invoke deploy`")
        path, _, manifest = done.stdout.decode().partition("\n")
        yield Deployed(env, connection, json.loads(manifest), path.strip())
    finally:
        connection.close()
