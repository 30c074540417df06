"""A scratch simulated VPS for item tests: a container of the VPS image (systemd, sshd, a bare
Debian 12), reached through `docker exec` with the same `run()` as `ssh.Connection`, so facts and
steps run on it unchanged. Each box has its own name and Docker volume and is removed after use.

What reaches it over SSH (logins, ssh-audit) is tested on the real simulated VPS (tests/e2e); a
box is where one item's convergence is proved on a real systemd, sshd, nftables and Docker.
"""

from __future__ import annotations

import subprocess
import time
import uuid

from opskit.sim.vps_plan import container_runtime_args
from opskit.sim.vps_config import IMAGE
from opskit.ssh import Completed


class Box:
    def __init__(self, name: str | None = None, publish: tuple = ()):
        self.name = name or f"opskit-box-{uuid.uuid4().hex[:8]}"
        self.volume = f"{self.name}-docker"
        ports = [a for p in publish for a in ("-p", p)]
        subprocess.run(["docker", "run", "-d", "--name", self.name, "--hostname", "box", *container_runtime_args(),
                        "--volume", f"{self.volume}:/var/lib/docker", *ports, IMAGE],
                       check=True, capture_output=True, timeout=120)
        self.wait_booted()

    def wait_booted(self, limit: float = 90) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            state = self.run(["systemctl", "is-system-running"]).output.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.3)
        raise AssertionError(f"{self.name} did not boot within {limit:g}s (systemctl is-system-running: {state})")

    def run(self, argv, stdin: bytes | None = None, timeout: float | None = 600, on_line=None) -> Completed:
        """Like `ssh.Connection.run`, as root inside the box."""
        cmd = ["docker", "exec", "-i", self.name, *argv] if not isinstance(argv, str) else \
            ["docker", "exec", "-i", self.name, "sh", "-c", argv]
        done = subprocess.run(cmd, input=stdin or b"", capture_output=True, timeout=timeout)
        return Completed(done.returncode, done.stdout, done.stderr)

    def sh(self, script: str) -> str:
        done = self.run(["sh", "-c", script])
        assert done.returncode == 0, f"{script!r} failed in {self.name}: {done.output[-800:]}"
        return done.stdout.decode()

    def ip(self, network: str = "bridge") -> str:
        fmt = "{{(index .NetworkSettings.Networks \"%s\").IPAddress}}" % network
        return subprocess.run(["docker", "inspect", "--format", fmt, self.name], capture_output=True, text=True,
                              check=True).stdout.strip()

    def close(self) -> None:
        subprocess.run(["docker", "rm", "-f", "--volumes", self.name], capture_output=True, timeout=120)
        subprocess.run(["docker", "volume", "rm", self.volume], capture_output=True, timeout=60)

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
