"""Faults a deploy must live through on the simulated VPS: the SSH link cut while it ships."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from opskit import ROOT
from tests.e2e.live import inventory_copy

pytestmark = pytest.mark.e2e


class HealthLoad(threading.Thread):
    """GET https://api.<domain>/health through Caddy every 100 ms (loopback only), counting failures."""

    def __init__(self, live):
        super().__init__(daemon=True)
        self.live, self.sent, self.failed, self.stop = live, 0, [], threading.Event()

    def run(self):
        web = self.live.web()
        while not self.stop.wait(0.1):
            self.sent += 1
            try:
                status = web.request(self.live.env.domains.api, "/health", timeout=30).status
                if status != 200:
                    self.failed.append(status)
            except OSError as exc:
                self.failed.append(repr(exc))


def code_only_change(tmp_path):
    """A copy of the API's context with one comment more, and 48 MB of random bytes among the code:
    a code-only change ships only its code layers, and these take long enough on the wire to be cut."""
    api = tmp_path / "api"
    shutil.copytree(ROOT / "tests/fixtures/app/api", api, ignore=shutil.ignore_patterns("__pycache__"))
    main = api / "app" / "main.py"
    main.write_text(main.read_text() + f"\n# e2e code-only change {time.time_ns()}\n")
    (api / "app" / "ballast.bin").write_bytes(os.urandom(48 * 1024 * 1024))
    return inventory_copy(tmp_path, lambda raw: raw["defaults"]["builds"]["api"].update(context=str(api)))


def invoke_deploy(inventory, *flags) -> subprocess.Popen:
    env = {**os.environ, "OPSKIT_INVENTORY": str(inventory), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--yes", "--no-smoke", *flags], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def in_vps(live, *argv) -> str:
    """A command inside the VPS's container (through Docker, not over the SSH link under test)."""
    return subprocess.run(["docker", "exec", live.env.vps.container, *argv], capture_output=True, text=True).stdout


def cut_the_link_while_it_loads(live, timeout: float = 120) -> None:
    """Once `docker load` runs on the VPS (the image is on the wire), kill the sshd processes that
    serve the deploy user: the link breaks mid-transfer."""
    deadline = time.monotonic() + timeout
    while not in_vps(live, "pgrep", "-f", "docker load").split():
        assert time.monotonic() < deadline, "no `docker load` ran on the VPS: nothing was shipped"
        time.sleep(0.05)
    time.sleep(0.3)
    pids = in_vps(live, "pgrep", "-f", f"sshd: {live.env.ssh.user}").split()
    assert pids, "no sshd process serves the deploy user"
    subprocess.run(["docker", "exec", live.env.vps.container, "kill", "-9", *pids], check=True)


#: the progress line of a ship step (in a branch of its own when it runs beside the folder and stores)
SHIP_STARTS = re.compile(r"==> \[\d+/\d+\] (?:[a-h]\| )?ship ")


def test_a_link_cut_mid_ship_is_recovered_and_the_next_deploy_just_works(live, tmp_path):
    before = live.snapshot()
    inventory = code_only_change(tmp_path)
    load = HealthLoad(live)
    load.start()
    deploy = invoke_deploy(inventory)
    lines, cut = [], False
    try:
        for line in deploy.stdout:
            lines.append(line)
            if not cut and SHIP_STARTS.match(line):
                cut_the_link_while_it_loads(live)
                cut = True
        code = deploy.wait(timeout=600)
    finally:
        if deploy.poll() is None:
            deploy.kill()
        load.stop.set()
        load.join(40)
    output = "".join(lines)
    assert cut, f"the deploy shipped nothing, so the link was never cut:\n{output[-3000:]}"
    assert code == 4, output[-3000:]
    assert "Traceback" not in output
    # the ship's step, or one beside it (the release folder, the stores) that noticed first
    assert "the connection was lost" in output and re.search(r"during step `(ship |upload |prepare |complete |"
                                                             r"install |start postgres|roles )", output), output[-3000:]
    assert "reconnected and recovered" in output, output[-3000:]
    after = live.snapshot()
    assert after["current"] == before["current"] and after["lock"] == "" and after["releases"] == before["releases"]
    assert load.sent > 20 and load.failed == [], load.failed[:5]

    again = invoke_deploy(inventory)  # no manual step: the plain next deploy
    output = again.communicate(timeout=900)[0]
    assert again.returncode == 0, output[-3000:]
    assert live.snapshot()["current"] != before["current"]
    live.deploy(live.env)  # the sources' own release again, for the tests after this one
