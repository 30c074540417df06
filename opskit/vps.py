"""The simulated VPS: a privileged container that behaves like a fresh Debian 12 cloud box.

`up()` makes it (kit images, a key pair for this checkout, the container), then pins its host key
out of band, the way one reads it from a provider's console: through `docker exec`, never from
the network (no trust on first use), into a known_hosts of its own. Every port is published on
127.0.0.1 only. The full VPS (`opskit/vps:bookworm`) runs Docker and lets `deploy` in; the bare
one (`opskit/vps-bare:bookworm`, `bare=True`) lets only root in and has no Docker, like a box
before provisioning.

Planning is pure (`plan_up`, `plan_pin`, `plan_down` from `VpsFacts`); `gather()` reads the engine
and the state folder; `up`, `down` and `status` put them together.
Will not touch: other containers, the kit images, or this checkout's key pair (`down` keeps it).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import ROOT, kit
from .errors import ConnectionFailed, OpskitError, StepFailed
from .runner import Runner
from .ssh import Connection, Target
from .steps import LOCAL, SERVER, Check, Plan, Run, WriteFile

BIND = "127.0.0.1"  # the only address anything is published on
FULL_IMAGE = "opskit/vps:bookworm"
BARE_IMAGE = "opskit/vps-bare:bookworm"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
GIVEN_KEYS = "/etc/vps/authorized_keys"  # read by the image's vps-authorize
LABEL_MODE = "opskit.vps.mode"
READY_TIMEOUT_S = 120


class VpsError(OpskitError):
    """The simulated VPS cannot be made or reached; the message says why and what to do."""


@dataclass(frozen=True)
class VpsConfig:
    """Where the simulated VPS lives. Built from inventory.yaml's `local` environment."""

    container: str = "opskit-vps"
    image: str = FULL_IMAGE  # the full VPS's image; bare mode always uses BARE_IMAGE
    ssh_port: int = 2222
    http_port: int = 80
    https_port: int = 443
    extra_ports: dict = field(default_factory=dict)  # host port -> VPS port, also on 127.0.0.1
    state_dir: Path = ROOT / ".opskit" / "local"
    user: str = "deploy"  # who gets the key on the full VPS; bare mode: root
    folders: tuple = ()  # folders the deploy user owns on the full VPS, as provisioning makes them

    def __post_init__(self):
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        object.__setattr__(self, "extra_ports", {int(h): int(c) for h, c in dict(self.extra_ports).items()})
        problems = []
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", self.container):
            problems.append(f"container: {self.container!r} is not a valid container name")
        ports = {"ssh_port": self.ssh_port, "http_port": self.http_port, "https_port": self.https_port}
        ports.update({f"extra_ports[{h}]": h for h in self.extra_ports})
        for name, port in [*ports.items(), *((f"extra_ports[{h}] target", c) for h, c in self.extra_ports.items())]:
            if not isinstance(port, int) or not 1 <= port <= 65535:
                problems.append(f"{name}: {port!r} is not a port number (1-65535)")
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                problems.append(f"{name}: host port {port} is also {seen[port]}")
            seen.setdefault(port, name)
        if not self.user:
            problems.append("user: must name the SSH user of the full VPS")
        if problems:
            raise VpsError("simulated VPS settings:\n" + "\n".join(f"  - {p}" for p in problems))

    @classmethod
    def from_environment(cls, env) -> "VpsConfig":
        """From an inventory Environment with `vps:` (the `local` one). Its key and known_hosts
        must be `id_ed25519` and `known_hosts` of one folder, the state folder."""
        if env.vps is None:
            raise VpsError(f"environment {env.name} has no `vps:` section: it is not a simulated VPS")
        state = Path(env.ssh.key_file).parent
        if Path(env.ssh.key_file).name != "id_ed25519" or Path(env.ssh.known_hosts) != state / "known_hosts":
            raise VpsError(f"environments.{env.name}.ssh: key_file and known_hosts must be id_ed25519 and "
                           f"known_hosts of one folder (like .opskit/local/), not {env.ssh.key_file} and "
                           f"{env.ssh.known_hosts}")
        return cls(container=env.vps.container, image=env.vps.image, ssh_port=env.ssh.port,
                   http_port=env.vps.http_port, https_port=env.vps.https_port, state_dir=state,
                   user=env.ssh.user, folders=(env.remote_dir,))

    @property
    def key_file(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def public_key_file(self) -> Path:
        return self.state_dir / "id_ed25519.pub"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def volume(self) -> str:
        return f"{self.container}-docker"

    @property
    def host_pattern(self) -> str:
        """How known_hosts names this VPS (OpenSSH writes a non-22 port as [host]:port)."""
        return BIND if self.ssh_port == 22 else f"[{BIND}]:{self.ssh_port}"

    def login(self, bare: bool) -> str:
        return "root" if bare else self.user

    def target(self, bare: bool = False) -> Target:
        return Target(BIND, self.ssh_port, self.login(bare), self.key_file, self.known_hosts)


@dataclass(frozen=True)
class Container:
    state: str  # running, exited, created, paused, ...
    image: str  # the reference it was created from
    image_id: str
    mode: str | None  # "full" or "bare" (its label)
    ssh_port: int | None


@dataclass(frozen=True)
class VpsFacts:
    container: Container | None = None
    has_volume: bool = False
    has_key: bool = False
    key_mode: int | None = None
    public_key: str | None = None  # this checkout's id_ed25519.pub (public: it may be printed)
    given_keys: str | None = None  # GIVEN_KEYS inside the container, when it runs
    host_key: str | None = None  # "ssh-ed25519 AAAA..." read through docker exec, when it runs
    known_hosts: str = ""  # the state folder's known_hosts as it is now
    image_ids: dict = field(default_factory=dict)  # image reference -> id, for the two VPS images


# -- pure: plans ------------------------------------------------------------------------------------


def mode_of(bare: bool) -> str:
    return "bare" if bare else "full"


def image_of(config: VpsConfig, bare: bool) -> str:
    return BARE_IMAGE if bare else config.image


def publish_args(config: VpsConfig) -> list[str]:
    """`-p` arguments: every one bound to 127.0.0.1; 443/udp too, for Caddy's HTTP/3."""
    pairs = [(config.ssh_port, "22"), (config.http_port, "80"), (config.https_port, "443"),
             (config.https_port, "443/udp")]
    pairs += [(h, str(c)) for h, c in sorted(config.extra_ports.items())]
    return [a for host, inside in pairs for a in ("-p", f"{BIND}:{host}:{inside}")]


def create_argv(config: VpsConfig, bare: bool) -> list[str]:
    # --privileged: its own Docker needs it (and a bare box may be provisioned with Docker later);
    # --init: tini as PID 1 reaps orphans and passes `docker stop` on to the boot script;
    # the volume: overlay2 for the nested Docker cannot sit on the container's own overlay.
    return ["docker", "create", "--name", config.container, "--hostname", "vps", "--privileged", "--init",
            "--label", f"{LABEL_MODE}={mode_of(bare)}", "--env", f"VPS_SSH_USER={config.login(bare)}",
            "--volume", f"{config.volume}:/var/lib/docker", *publish_args(config), image_of(config, bare)]


def plan_up(config: VpsConfig, facts: VpsFacts, bare: bool = False) -> Plan:
    """Key pair, container, authorized key, started and listening. Host key pinning follows
    (`plan_pin`), once the container can be asked for its key."""
    plan = Plan("vps.up" + (" --bare" if bare else ""))
    c, name = facts.container, config.container
    if c is not None:
        _refuse_other(config, c, bare)
    if not facts.has_key:
        if facts.public_key is not None:
            raise VpsError(f"{config.public_key_file} exists but {config.key_file} does not: "
                           "delete the .pub file to make a new pair")
        plan.add(
            Run("make the state folder", ["mkdir", "-p", "-m", "0700", str(config.state_dir)]),
            Run("make this checkout's SSH key pair (ed25519, no passphrase, mode 0600)",
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"opskit-vps@{name}",
                 "-f", str(config.key_file)]),
        )
    elif facts.key_mode is not None and facts.key_mode & 0o077:
        plan.add(Run("make the private key private (ssh refuses it otherwise)", ["chmod", "0600", str(config.key_file)]))
    # the public key reaches the box by file, as a provider hands its key to cloud-init
    key_is_given = facts.has_key and facts.public_key is not None and facts.given_keys is not None \
        and facts.public_key.strip() in facts.given_keys.splitlines()
    give_key = Run("give the VPS this checkout's public key",
                   ["docker", "cp", str(config.public_key_file), f"{name}:{GIVEN_KEYS}"])
    wait = Run("wait for sshd in the VPS" + ("" if bare else " (Docker starts first)"),
               ["docker", "exec", name, "vps-ready", str(READY_TIMEOUT_S)], timeout=READY_TIMEOUT_S + 30)
    if c is None:
        plan.add(Run(f"create {name} from {image_of(config, bare)}", create_argv(config, bare)),
                 give_key, Run(f"start {name}", ["docker", "start", name]), wait)
    elif c.state == "running":
        if not key_is_given:
            plan.add(give_key, Run(f"authorize it for {config.login(bare)}", ["docker", "exec", name, "vps-authorize"]))
        plan.add(wait)
    else:
        if c.state == "paused":
            plan.add(Run(f"unpause {name}", ["docker", "unpause", name]))
        else:
            if not key_is_given:
                plan.add(give_key)
            plan.add(Run(f"start {name} (it was {c.state})", ["docker", "start", name]))
        plan.add(wait)
    if not bare:
        # what provisioning does on a real server: the deploy folder belongs to the deploy user
        plan.add(*(Run(f"give {config.user} {folder}", ["docker", "exec", name, "install", "-d", "-o", config.user,
                                                        "-g", config.user, "-m", "0750", folder])
                   for folder in config.folders))
    return plan


def _refuse_other(config: VpsConfig, c: Container, bare: bool) -> None:
    if c.mode is None:
        raise VpsError(f"a container named {config.container} exists but opskit did not make it "
                       f"(no {LABEL_MODE} label): remove it, or choose another vps.container")
    if c.mode != mode_of(bare):
        flag = "" if bare else " --bare"
        raise VpsError(f"{config.container} is the {c.mode} VPS ({c.image}); this asks for the {mode_of(bare)} "
                       f"one: `invoke vps.down` first (or `invoke vps.up{flag}` to use it as it is)")
    if c.ssh_port is not None and c.ssh_port != config.ssh_port:
        raise VpsError(f"{config.container} publishes SSH on {BIND}:{c.ssh_port}, not {config.ssh_port} as "
                       "configured: `invoke vps.down` and up again to move it")


def known_hosts_line(config: VpsConfig, host_key: str) -> str:
    """`[127.0.0.1]:2222 ssh-ed25519 AAAA...` from the host's `ssh-ed25519 AAAA... comment`."""
    parts = host_key.split()
    if len(parts) < 2 or parts[0] != "ssh-ed25519":
        raise VpsError(f"{HOST_KEY} of {config.container} does not hold an ed25519 key: {host_key[:60]!r}")
    return f"{config.host_pattern} {parts[0]} {parts[1]}"


def without_host(text: str, pattern: str) -> str:
    """known_hosts text without the lines for pattern (others stay as they are)."""
    kept = [line for line in text.splitlines()
            if not line.strip() or line.startswith("#") or pattern not in line.split()[0].split(",")]
    return "".join(f"{line}\n" for line in kept if line.strip())


def plan_pin(config: VpsConfig, facts: VpsFacts, bare: bool = False) -> Plan:
    """Pin the host key read out of band, then prove SSH works with it (and Docker, unless bare).

    With no host key in the facts (a dry run before the container exists) the pin step is shown
    with the key it will read at run time."""
    plan = Plan("vps.pin")
    if facts.host_key is None:
        content = f"{config.host_pattern} ssh-ed25519 <read from {HOST_KEY} once the VPS runs>\n".encode()
        plan.add(WriteFile(f"pin the host key read through `docker exec {config.container}`",
                           str(config.known_hosts), content, 0o644, on=LOCAL))
    else:
        wanted = without_host(facts.known_hosts, config.host_pattern) + known_hosts_line(config, facts.host_key) + "\n"
        if wanted != facts.known_hosts:
            plan.add(WriteFile(f"pin the host key read through `docker exec {config.container}`",
                               str(config.known_hosts), wanted.encode(), 0o644, on=LOCAL))
    login = config.login(bare)
    plan.add(Check(f"SSH as {login} with the pinned host key", ["id", "-un"], on=SERVER, expect=login,
                   hint=f"see `docker logs {config.container}`"))
    if not bare:
        plan.add(Check(f"Docker answers {login} over SSH", ["docker", "info", "--format", "{{.ServerVersion}}"],
                       on=SERVER, hint=f"see `docker exec {config.container} tail -n 30 /var/log/dockerd.log`"))
    return plan


def plan_down(config: VpsConfig, facts: VpsFacts) -> Plan:
    """Remove the container, its Docker volume and its known_hosts entry; keep the key pair."""
    plan = Plan("vps.down")
    if facts.container is not None:
        plan.add(Run(f"remove {config.container}", ["docker", "rm", "--force", "--volumes", config.container]))
    if facts.has_volume:
        plan.add(Run(f"remove its Docker volume {config.volume}", ["docker", "volume", "rm", config.volume]))
    kept = without_host(facts.known_hosts, config.host_pattern)
    if kept != facts.known_hosts:
        plan.add(WriteFile(f"forget its host key ({config.host_pattern})", str(config.known_hosts),
                           kept.encode(), 0o644, on=LOCAL))
    return plan


# -- facts ------------------------------------------------------------------------------------------


def _docker(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise VpsError("the docker client is missing: run scripts/setup-docker.sh") from exc


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def gather(config: VpsConfig) -> VpsFacts:
    """Read-only: the container, its volume, the key pair, known_hosts, and (when it runs) the
    keys it was given and its host key, through `docker exec`."""
    inspected = _docker("container", "inspect", config.container)
    container = None
    if inspected.returncode == 0:
        info = json.loads(inspected.stdout)[0]
        bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
        ssh = (bindings.get("22/tcp") or [{}])[0].get("HostPort")
        container = Container(
            state=info["State"]["Status"], image=info["Config"]["Image"], image_id=info["Image"],
            mode=(info["Config"].get("Labels") or {}).get(LABEL_MODE), ssh_port=int(ssh) if ssh else None)
    elif "No such" not in inspected.stderr and "no such" not in inspected.stderr:
        raise VpsError(f"cannot ask Docker about {config.container}: {inspected.stderr.strip()} "
                       "(is the engine up? scripts/setup-docker.sh)")
    given = host_key = None
    if container is not None and container.state == "running":
        given = _exec_read(config, GIVEN_KEYS)
        host_key = _exec_read(config, HOST_KEY)
        host_key = host_key.strip() if host_key else None
    key_mode = config.key_file.stat().st_mode & 0o777 if config.key_file.exists() else None
    images = _docker("image", "inspect", "--format", "{{json .RepoTags}} {{.Id}}", FULL_IMAGE, BARE_IMAGE)
    image_ids = {}
    for line in images.stdout.splitlines():
        tags, _, image_id = line.rpartition(" ")
        for tag in json.loads(tags or "[]"):
            image_ids[tag] = image_id
    return VpsFacts(
        container=container,
        has_volume=_docker("volume", "inspect", config.volume).returncode == 0,
        has_key=config.key_file.exists(),
        key_mode=key_mode,
        public_key=_read(config.public_key_file),
        given_keys=given,
        host_key=host_key,
        known_hosts=_read(config.known_hosts) or "",
        image_ids=image_ids,
    )


def _exec_read(config: VpsConfig, path: str) -> str | None:
    done = _docker("exec", config.container, "cat", path)
    return done.stdout if done.returncode == 0 else None


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


def ssh_command(config: VpsConfig, bare: bool = False) -> str:
    return shlex.join(["ssh", "-i", str(config.key_file), "-p", str(config.ssh_port),
                       "-o", f"UserKnownHostsFile={config.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                       "-o", "IdentitiesOnly=yes", f"{config.login(bare)}@{BIND}"])


def up(config: VpsConfig | None = None, bare: bool = False, dry_run: bool = False, out=None) -> UpReport | None:
    """Make the simulated VPS reachable over SSH with a pinned host key (idempotent: a running one
    is only checked, a stopped one started). Builds missing kit images first."""
    config = config or VpsConfig()
    started = time.monotonic()
    if shutil.which("ssh-keygen") is None and not config.key_file.exists():
        raise VpsError("ssh-keygen is missing (it makes this checkout's key pair): apt-get install openssh-client")
    kit.build_kit(rebuild=False, dry_run=dry_run, out=out)
    facts = gather(config)
    runner = Runner(dry_run=dry_run, out=out)
    if facts.container is not None and facts.image_ids.get(facts.container.image) not in (None, facts.container.image_id):
        runner.say(f"note: {config.container} runs an older {facts.container.image}; "
                   "`invoke vps.down` and `invoke vps.up` move it to the new one")
    _run_explained(runner, plan_up(config, facts, bare), config)
    if not dry_run:
        facts = gather(config)
        if facts.host_key is None:
            facts = VpsFacts(**{**facts.__dict__, "host_key": read_host_key(config)})
    connection = Connection(config.target(bare))
    try:
        pin_runner = Runner(connection, dry_run=dry_run, out=out)
        pin_started = time.monotonic()
        results = _run_explained(pin_runner, plan_pin(config, facts, bare), config)
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
    report = UpReport(str(config.target(bare)), time.monotonic() - started, ssh_at, ssh_command(config, bare))
    runner.say(str(report))
    return report


def _run_explained(runner: Runner, plan: Plan, config: VpsConfig):
    """Run a plan; when it fails, add the VPS's own log, which usually says why."""
    try:
        return runner.run(plan)
    except (StepFailed, ConnectionFailed) as exc:
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
    mode: str | None
    image: str | None
    target: str | None
    host_key_pinned: bool

    def __str__(self) -> str:
        if self.state == "absent":
            return f"{self.container}: absent (`invoke vps.up` makes it)"
        pinned = "pinned" if self.host_key_pinned else "NOT pinned (`invoke vps.up` pins it)"
        return f"{self.container}: {self.state}, {self.mode} VPS from {self.image}, ssh {self.target}, host key {pinned}"


def status(config: VpsConfig | None = None) -> VpsStatus:
    """Read-only: whether the VPS exists and runs, and whether its host key is pinned here."""
    config = config or VpsConfig()
    facts = gather(config)
    c = facts.container
    if c is None:
        return VpsStatus(config.container, "absent", None, None, None, False)
    bare = c.mode == "bare"
    pinned = facts.host_key is not None and \
        known_hosts_line(config, facts.host_key) in facts.known_hosts.splitlines()
    return VpsStatus(config.container, c.state, c.mode, c.image, str(config.target(bare)), pinned)
