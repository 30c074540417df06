"""Where the simulated VPS lives: its container, images, ports and this checkout's key pair.

Built from inventory.yaml's `local` environment (`VpsConfig.from_environment`), or the defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import ROOT
from ..errors import VpsError
from ..ssh import Target

BIND = "127.0.0.1"  # the only address anything is published on
IMAGE = "opskit/vps:bookworm"
HOST_KEY = "/etc/ssh/ssh_host_ed25519_key.pub"
GIVEN_KEYS = "/etc/vps/authorized_keys"  # read by the image's vps-authorize
LABEL = "opskit.vps"  # on every container `vps.up` makes
READY_TIMEOUT_S = 120
# The VPS's own network, outside Docker's default address pools (172.17.0.0/16 to 172.31.0.0/16,
# 192.168.0.0/16): the Docker inside the VPS takes its networks from those pools, and a route of
# its that covers the VPS's own address would make the outer engine refuse to attach it.
NETWORK_SUBNET = "10.213.0.0/24"
NETWORK = "opskit-vps-net"  # one for every simulated VPS (a subnet cannot be given twice)


@dataclass(frozen=True)
class VpsConfig:
    """Where the simulated VPS lives. Built from inventory.yaml's `local` environment."""

    container: str = "opskit-vps"
    image: str = IMAGE
    ssh_port: int = 2222
    http_port: int = 80
    https_port: int = 443
    extra_ports: dict = field(default_factory=dict)  # host port -> VPS port, also on 127.0.0.1
    state_dir: Path = ROOT / ".opskit" / "local"
    user: str = "deploy"  # who logs in once it is provisioned; a bare VPS lets only root in

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
                   user=env.ssh.user)

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
    def network(self) -> str:
        """The network the VPS sits on: the project's own, where tests reach it from their containers."""
        return NETWORK

    @property
    def host_pattern(self) -> str:
        """How known_hosts names this VPS (OpenSSH writes a non-22 port as [host]:port)."""
        return BIND if self.ssh_port == 22 else f"[{BIND}]:{self.ssh_port}"

    def login(self, bare: bool) -> str:
        return "root" if bare else self.user

    def target(self, bare: bool = False) -> Target:
        return Target(BIND, self.ssh_port, self.login(bare), self.key_file, self.known_hosts)
