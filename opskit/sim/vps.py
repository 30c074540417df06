"""The simulated VPS: a privileged container that behaves like a fresh Debian 12 cloud box.

`up()` makes it (the kit images it runs from, a key pair for this checkout, the container), then
pins its host key out of band, the way one reads it from a provider's console: through
`docker exec`, never from the network (no trust on first use), into a known_hosts of its own.
`down()` removes it; `status()` says how it is.

`gather()` reads the engine and the state folder; the plans are pure (`vps_plan`); the one runner
runs them. Configuration: `vps_config.VpsConfig`. `up_provisioned()` is `up()` and then
`invoke provision`: the VPS as `deploy -e local` wants it.
Will not touch: other containers, the kit images (beyond building missing or stale ones), or this
checkout's key pair (`down` keeps it).
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConnectionFailed, StepFailed, VpsError
from ..runner import Runner
from ..ssh import Connection
from ..steps import Check, Plan
from . import kit
from ..provision.item import PROVISIONED
from .vps_config import BIND, GIVEN_KEYS, HOST_KEY, LABEL, VpsConfig
from .vps_plan import Container, VpsFacts, known_hosts_line, plan_down, plan_pin, plan_up, runs_older_image

# -- facts ------------------------------------------------------------------------------------------


def _docker(*argv: str, timeout: float = 30, text: bool = True) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["docker", *argv], capture_output=True, text=text, timeout=timeout)
    except FileNotFoundError as exc:
        raise VpsError("the docker client is missing: run scripts/setup-docker.sh") from exc


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def gather(config: VpsConfig) -> VpsFacts:
    """Read-only: the container, its volume, the key pair, known_hosts, and the keys it was given,
    its host key and whether it was provisioned (through `docker exec`, or `docker cp` when it is
    stopped: a stopped box made for another key must be refused before it is started)."""
    inspected = _docker("container", "inspect", config.container)
    container = None
    if inspected.returncode == 0:
        info = json.loads(inspected.stdout)[0]
        bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
        ssh = (bindings.get("22/tcp") or [{}])[0].get("HostPort")
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        container = Container(
            state=info["State"]["Status"], image=info["Config"]["Image"], image_id=info["Image"],
            ours=LABEL in (info["Config"].get("Labels") or {}), ssh_port=int(ssh) if ssh else None,
            networks={n: (v or {}).get("NetworkID") for n, v in networks.items()})
    elif "No such" not in inspected.stderr and "no such" not in inspected.stderr:
        raise VpsError(f"cannot ask Docker about {config.container}: {inspected.stderr.strip()} "
                       "(is the engine up? scripts/setup-docker.sh)")
    given = host_key = provisioned = None
    if container is not None:
        running = container.state == "running"
        given = _read_in(config, GIVEN_KEYS, running)
        host_key = _read_in(config, HOST_KEY, running)
        host_key = host_key.strip() if host_key else None
        provisioned = _read_in(config, PROVISIONED, running)
    key_mode = config.key_file.stat().st_mode & 0o777 if config.key_file.exists() else None
    images = _docker("image", "inspect", "--format", "{{json .RepoTags}} {{.Id}}", config.image)
    image_ids = {}
    for line in images.stdout.splitlines():
        tags, _, image_id = line.rpartition(" ")
        for tag in json.loads(tags or "[]"):
            image_ids[tag] = image_id
    network = _docker("network", "inspect", "--format", "{{.Id}}", config.network)
    network_id = network.stdout.strip() if network.returncode == 0 else None
    # stopped containers too (a network's own inspect lists running ones only)
    users = _docker("ps", "--all", "--filter", f"network={config.network}", "--format", "{{.Names}}").stdout.split()
    return VpsFacts(
        container=container,
        network_id=network_id,
        network_users=tuple(users),
        has_volume=_docker("volume", "inspect", config.volume).returncode == 0,
        has_key=config.key_file.exists(),
        key_mode=key_mode,
        public_key=_read(config.public_key_file),
        given_keys=given,
        host_key=host_key,
        known_hosts=_read(config.known_hosts) or "",
        image_ids=image_ids,
        provisioned=provisioned,
    )


def _exec_read(config: VpsConfig, path: str) -> str | None:
    done = _docker("exec", config.container, "cat", path)
    return done.stdout if done.returncode == 0 else None


def _read_in(config: VpsConfig, path: str, running: bool) -> str | None:
    if running:
        return _exec_read(config, path)
    # `docker cp` reads a stopped container's files (as a tar stream) without starting it
    done = _docker("cp", f"{config.container}:{path}", "-", text=False)
    if done.returncode != 0:
        return None
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        member = tar.next()
        data = tar.extractfile(member) if member is not None and member.isfile() else None
        return data.read().decode() if data is not None else None


def read_host_key(config: VpsConfig) -> str:
    """The VPS's ed25519 host key, read through `docker exec` (the provider's console, not the network)."""
    key = _exec_read(config, HOST_KEY)
    if not key:
        raise VpsError(f"{config.container} has no {HOST_KEY} yet: see `docker logs {config.container}`")
    return key.strip()


# -- effects ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpReport:
    target: str
    seconds: float  # the whole up, kit check included
    ssh_seconds: float | None  # from the start until the first SSH command succeeded
    ssh_command: str  # how a person logs in

    def __str__(self) -> str:
        first = f", first SSH command after {self.ssh_seconds:.1f}s" if self.ssh_seconds is not None else ""
        return f"vps up: {self.target} in {self.seconds:.1f}s{first}\n  log in with: {self.ssh_command}"


def ssh_command(config: VpsConfig, user: str) -> str:
    return shlex.join(["ssh", "-i", str(config.key_file), "-p", str(config.ssh_port),
                       "-o", f"UserKnownHostsFile={config.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                       "-o", "IdentitiesOnly=yes", f"{user}@{BIND}"])


def up(config: VpsConfig | None = None, dry_run: bool = False, out=None) -> UpReport | None:
    """Make the simulated VPS reachable over SSH with a pinned host key (idempotent: a running one
    is only checked, a stopped one started). Kit images that are missing or out of date are built
    first, as the first steps of the same plan: it says which and why before, and how long after.
    A bare box is proven by a login as root; a provisioned one refuses root by design, and
    `provision` proves its own logins."""
    config = config or VpsConfig()
    started = time.monotonic()
    if shutil.which("ssh-keygen") is None and not config.key_file.exists():
        raise VpsError("ssh-keygen is missing (it makes this checkout's key pair): apt-get install openssh-client")
    decisions, kit_plan = kit.prepare()
    facts = gather(config)
    runner = Runner(dry_run=dry_run, out=out)
    if runs_older_image(facts, {d.image.tag for d in decisions if d.build}):
        runner.say(f"note: {config.container} runs an older {facts.container.image}; "
                   "`invoke vps.down` and `invoke vps.up` move it to the new one")
    vps_plan = plan_up(config, facts)
    if kit_plan.steps:
        runner.say("vps up: its images come from the kit, built first")
    runner.say(kit.intent(decisions))
    results = _run_explained(runner, Plan(vps_plan.name, [*kit_plan, *vps_plan]), config, kit_plan.steps)
    if kit_plan.steps and not dry_run:
        runner.say(kit.built(decisions, sum(r.seconds for r in results[:len(kit_plan)])))
    if not dry_run:
        facts = gather(config)
        if facts.host_key is None:
            facts = VpsFacts(**{**facts.__dict__, "host_key": read_host_key(config)})
    login = None if facts.provisioned else "root"
    connection = Connection(config.target(bare=True))
    try:
        pin_runner = Runner(connection, dry_run=dry_run, out=out)
        pin_started = time.monotonic()
        results = _run_explained(pin_runner, plan_pin(config, facts, login), config)
    finally:
        connection.close()
    if dry_run:
        return None
    ssh_at = None
    elapsed = pin_started - started
    for result in results:
        elapsed += result.seconds
        if isinstance(result.step, Check):
            ssh_at = elapsed
            break
    user = config.user if facts.provisioned else "root"
    report = UpReport(str(config.target(bare=not facts.provisioned)), time.monotonic() - started, ssh_at,
                      ssh_command(config, user))
    runner.say(str(report))
    return report


def _run_explained(runner: Runner, plan: Plan, config: VpsConfig, kit_steps=()):
    """Run a plan; when a step of the VPS fails, add its own log, which usually says why (a kit
    step's failure speaks for itself)."""
    try:
        return runner.run(plan)
    except (StepFailed, ConnectionFailed) as exc:
        if getattr(exc, "step", None) in kit_steps:
            raise
        logs = _docker("logs", "--tail", "25", config.container)
        tail = (logs.stdout + logs.stderr).strip() if logs.returncode == 0 else "(no container)"
        raise VpsError(f"{exc}\n--- last lines of `docker logs {config.container}` ---\n{tail}\n"
                       f"fix what they show, or start over: `invoke vps.down` then `invoke vps.up`") from exc


def down(config: VpsConfig | None = None, dry_run: bool = False, out=None) -> None:
    """Remove the simulated VPS, its Docker volume and its pinned host key. The key pair stays."""
    config = config or VpsConfig()
    started = time.monotonic()
    runner = Runner(dry_run=dry_run, out=out)
    plan = plan_down(config, gather(config))
    if not plan.steps:
        runner.say(f"vps down: no {config.container} here, nothing to remove")
        return
    runner.run(plan)
    if not dry_run:
        runner.say(f"vps down: {config.container} removed in {time.monotonic() - started:.1f}s")


@dataclass(frozen=True)
class VpsStatus:
    container: str
    state: str  # "absent" when there is no container
    provisioned: bool
    image: str | None
    target: str | None
    host_key_pinned: bool

    def __str__(self) -> str:
        if self.state == "absent":
            return f"{self.container}: absent (`invoke vps.up` makes it)"
        pinned = "pinned" if self.host_key_pinned else "NOT pinned (`invoke vps.up` pins it)"
        what = "provisioned" if self.provisioned else "bare (`invoke provision`)"
        return f"{self.container}: {self.state}, {what}, from {self.image}, ssh {self.target}, host key {pinned}"


def status(config: VpsConfig | None = None) -> VpsStatus:
    """Read-only: whether the VPS exists and runs, and whether its host key is pinned here."""
    config = config or VpsConfig()
    facts = gather(config)
    c = facts.container
    if c is None:
        return VpsStatus(config.container, "absent", False, None, None, False)
    pinned = facts.host_key is not None and \
        known_hosts_line(config, facts.host_key) in facts.known_hosts.splitlines()
    done = bool(facts.provisioned)
    return VpsStatus(config.container, c.state, done, c.image, str(config.target(bare=not done)), pinned)


def up_provisioned(env, dry_run: bool = False, out=None):
    """The VPS of the `local` environment `env`, up and provisioned by `invoke provision` (which
    changes nothing on a box it already provisioned): what `deploy -e local` deploys to."""
    from ..provision.run import provision  # the sim drives the real provisioning, no shortcut of its own

    report = up(VpsConfig.from_environment(env), dry_run=dry_run, out=out)
    provision(env, dry_run=dry_run, out=out)
    return report
