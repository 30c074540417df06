"""The simulated VPS's plans as data: what `up`, the host-key pin and `down` do, from `VpsFacts`.

Pure: `vps.gather()` reads the facts, `vps.up`/`vps.down` run the plans.
The VPS (`opskit/vps:bookworm`) boots as a fresh cloud box: systemd, sshd, root with the key it
was created with. `invoke provision` makes it a server that deploys (`vps.up` does so unless
`--bare`). Every port is published on 127.0.0.1 only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import VpsError
from ..steps import LOCAL, SERVER, Check, Plan, Run, WriteFile
from .vps_config import BIND, GIVEN_KEYS, HOST_KEY, LABEL, NETWORK_SUBNET, READY_TIMEOUT_S, VpsConfig


@dataclass(frozen=True)
class Container:
    state: str  # running, exited, created, paused, ...
    image: str  # the reference it was created from
    image_id: str
    ours: bool  # it carries the label `vps.up` gives
    ssh_port: int | None
    networks: dict = field(default_factory=dict)  # network name -> its id, as the container records them


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
    image_ids: dict = field(default_factory=dict)  # image reference -> id, for the VPS image
    provisioned: str | None = None  # what `invoke provision` left in PROVISIONED, when it runs
    network_id: str | None = None  # the id of config.network, when it exists
    network_users: tuple = ()  # the containers attached to config.network


def publish_args(config: VpsConfig) -> list[str]:
    """`-p` arguments: every one bound to 127.0.0.1; 443/udp too, for Caddy's HTTP/3."""
    pairs = [(config.ssh_port, "22"), (config.http_port, "80"), (config.https_port, "443"),
             (config.https_port, "443/udp")]
    pairs += [(h, str(c)) for h, c in sorted(config.extra_ports.items())]
    return [a for host, inside in pairs for a in ("-p", f"{BIND}:{host}:{inside}")]


def container_runtime_args() -> list[str]:
    """How a VPS container runs: privileged (the Docker that provisioning installs, nftables and
    systemd need it), with /run and /run/lock as tmpfs as systemd expects of a boot."""
    return ["--privileged", "--tmpfs", "/run", "--tmpfs", "/run/lock"]


def create_argv(config: VpsConfig) -> list[str]:
    # the volume: overlay2 for the nested Docker cannot sit on the container's own overlay
    return ["docker", "create", "--name", config.container, "--hostname", "vps", *container_runtime_args(),
            "--label", f"{LABEL}=1", "--network", config.network, "--volume", f"{config.volume}:/var/lib/docker",
            *publish_args(config), config.image]


def network_argv(config: VpsConfig) -> list[str]:
    return ["docker", "network", "create", "--label", f"{LABEL}=1", "--subnet", NETWORK_SUBNET, config.network]


def on_its_network(config: VpsConfig, facts: VpsFacts) -> bool:
    """Whether the container is attached to the network that exists now under config.network (one
    made by an older opskit sits on Docker's default bridge; one whose network was removed cannot
    start)."""
    c = facts.container
    return c is not None and facts.network_id is not None and c.networks.get(config.network) == facts.network_id


def plan_up(config: VpsConfig, facts: VpsFacts) -> Plan:
    """Key pair, container, root's authorized key, booted and listening. Host key pinning follows
    (`plan_pin`), once the container can be asked for its key."""
    plan = Plan("vps.up")
    c, name = facts.container, config.container
    if c is not None:
        _refuse_other(config, c)
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
    wait = Run("wait for sshd in the VPS (it boots first)",
               ["docker", "exec", name, "vps-ready", str(READY_TIMEOUT_S)], timeout=READY_TIMEOUT_S + 30)
    if facts.network_id is None:
        plan.add(Run(f"create its network {config.network} ({NETWORK_SUBNET})", network_argv(config)))
    if c is not None and not on_its_network(config, facts):
        # a simulated box is cattle: its Docker data stays on the volume, `provision` redoes the rest
        plan.add(Run(f"remove {name}: it is not on the network {config.network} (made by an older opskit, "
                     "or its network was removed); it is made again, its volume kept",
                     ["docker", "rm", "--force", name]))
        c = None
    if c is None:
        plan.add(Run(f"create {name} from {config.image}", create_argv(config)),
                 give_key, Run(f"start {name}", ["docker", "start", name]), wait)
    elif not key_is_given and facts.provisioned:
        # root may not log in there, and its deploy user knows only the other key (running or not)
        raise VpsError(f"{name} was provisioned for another key than this checkout's ({config.public_key_file}): "
                       "another checkout (or an older key pair) made it. `invoke vps.down` removes it, with "
                       "its Docker data; then `invoke deploy` makes and provisions one for this checkout")
    elif c.state == "running":
        if not key_is_given:
            plan.add(give_key, Run("authorize it for root", ["docker", "exec", name, "vps-authorize"]))
        plan.add(wait)
    else:
        if c.state == "paused":
            plan.add(Run(f"unpause {name}", ["docker", "unpause", name]))
        else:
            if not key_is_given:
                plan.add(give_key)
            plan.add(Run(f"start {name} (it was {c.state})", ["docker", "start", name]))
        plan.add(wait)
    return plan


def _refuse_other(config: VpsConfig, c: Container) -> None:
    if not c.ours:
        raise VpsError(f"a container named {config.container} exists but opskit did not make it "
                       f"(no {LABEL} label): remove it, or choose another vps.container")
    if c.ssh_port is not None and c.ssh_port != config.ssh_port:
        raise VpsError(f"{config.container} publishes SSH on {BIND}:{c.ssh_port}, not {config.ssh_port} as "
                       "configured: `invoke vps.down` and up again to move it")


def runs_older_image(facts: VpsFacts, rebuilt: set) -> bool:
    """Whether the container was made from an image that was (or is about to be) built again."""
    c = facts.container
    return c is not None and (c.image in rebuilt or facts.image_ids.get(c.image) not in (None, c.image_id))


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


def plan_pin(config: VpsConfig, facts: VpsFacts, login: str | None = "root") -> Plan:
    """Pin the host key read out of band, then prove SSH works with it as `login` (None: no proof
    here; provisioning proves its own logins).

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
    if login:
        plan.add(Check(f"SSH as {login} with the pinned host key", ["id", "-un"], on=SERVER, expect=login,
                       hint=f"see `docker exec {config.container} journalctl -u ssh`"))
    return plan


def plan_down(config: VpsConfig, facts: VpsFacts) -> Plan:
    """Remove the container, its Docker volume and its known_hosts entry; keep the key pair."""
    plan = Plan("vps.down")
    if facts.container is not None:
        plan.add(Run(f"remove {config.container}", ["docker", "rm", "--force", "--volumes", config.container]))
    if facts.has_volume:
        plan.add(Run(f"remove its Docker volume {config.volume}", ["docker", "volume", "rm", config.volume]))
    if facts.network_id is not None and set(facts.network_users) <= {config.container}:
        plan.add(Run(f"remove its network {config.network}", ["docker", "network", "rm", config.network]))
    kept = without_host(facts.known_hosts, config.host_pattern)
    if kept != facts.known_hosts:
        plan.add(WriteFile(f"forget its host key ({config.host_pattern})", str(config.known_hosts),
                           kept.encode(), 0o644, on=LOCAL))
    return plan
