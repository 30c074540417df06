"""A Storage Box beside the simulated VPS: an SFTP-only host (kit image `opskit/sftp`) on the VPS's
own network, the off-server target of the backups in tests.

It has a fixed address on that network: restic runs in a container on the default bridge of the
engine inside the VPS, which gets no resolver that knows this machine's container names (Docker
drops a loopback nameserver there and would fall back to public ones), so the repository names an
address, never a name. Its host key is made when the container starts and read out of band
(`docker exec`), never learnt on first use; the login key is made by ssh-keygen per run.

`up()` and `down()` are plans run by the one runner; `up()` returns a `StorageBox`.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import VpsError
from ..runner import Runner
from ..steps import Plan, Run
from .kit_plan import TAGS
from .vps_config import NETWORK

CONTAINER = "opskit-storagebox"
ADDRESS = "10.213.0.250"  # in NETWORK_SUBNET, far from the addresses Docker hands out from the start
USER = "backup"
LABEL = "opskit.storage-box"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
READY_TIMEOUT_S = 30


def _docker(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False)


def state() -> str | None:
    done = _docker("container", "inspect", "--format", "{{.State.Status}}", CONTAINER)
    return done.stdout.strip() if done.returncode == 0 else None


def plan_up(found: str | None, public_key: str, image: str = TAGS["sftp"]) -> Plan:
    """A new container whenever one is asked for: its login key is this run's."""
    plan = Plan("storage-box.up")
    if found is not None:
        plan.add(Run(f"remove the earlier {CONTAINER}", ["docker", "rm", "--force", "--volumes", CONTAINER]))
    plan.add(Run(f"start {CONTAINER} at {ADDRESS} on {NETWORK}",
                 ["docker", "run", "--detach", "--name", CONTAINER, "--label", f"{LABEL}=1", "--network", NETWORK,
                  "--ip", ADDRESS, "--restart", "unless-stopped", "--env", f"SFTP_USER={USER}",
                  "--env", f"SFTP_AUTHORIZED_KEY={public_key.strip()}", image]))
    return plan


def plan_down(found: str | None) -> Plan:
    plan = Plan("storage-box.down")
    if found is not None:
        plan.add(Run(f"remove {CONTAINER}", ["docker", "rm", "--force", "--volumes", CONTAINER]))
    return plan


@dataclass(frozen=True)
class StorageBox:
    key_file: Path  # the private key restic logs in with (this run's)
    known_hosts: str  # the pinned line, read out of band

    @staticmethod
    def repository(path: str) -> str:
        return f"sftp:{USER}@{ADDRESS}:/data/{path.strip('/')}"

    def data_path(self, path: str) -> str:
        """Where a repository lives inside the container (the chroot's data/)."""
        return f"/srv/sftp/{USER}/data/{path.strip('/')}"


def up(folder: Path, runner: Runner | None = None) -> StorageBox:
    """Start a Storage Box with a new login key (made in `folder`, 0600) and pin its host key."""
    key = folder / "storagebox_ed25519"
    key.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "opskit-backup", "-f", str(key)],
                   check=True, capture_output=True)
    (runner or Runner()).run(plan_up(state(), key.with_suffix(".pub").read_text()))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        done = _docker("exec", CONTAINER, "sh", "-c", f"test -s {HOST_KEY} && pidof sshd >/dev/null && cat {HOST_KEY}")
        if done.returncode == 0:
            kind, blob = done.stdout.split()[:2]
            return StorageBox(key, f"{ADDRESS} {kind} {blob}\n")
        if time.monotonic() > deadline:
            raise VpsError(f"{CONTAINER} did not start sshd within {READY_TIMEOUT_S}s: "
                           + _docker("logs", CONTAINER).stderr[-2000:])
        time.sleep(0.3)


def down(runner: Runner | None = None) -> None:
    (runner or Runner()).run(plan_down(state()))
