"""Let's Encrypt's test CA beside the simulated VPS: Pebble and its DNS test server (challtestsrv),
as containers on the VPS's own network, so that Caddy inside the VPS gets real ACME certificates
(HTTP-01, TLS-ALPN-01) for domains that resolve to the VPS there.

Pebble asks challtestsrv for every name it validates, and challtestsrv answers only the A records
set with `AcmeCa.point` (no default answer: a name not pointed anywhere does not resolve, so a
test can make a challenge fail). Caddy, two Docker engines down, reaches the directory as
`pebble.opskit.test`: the engine inside the VPS forwards no single-label name to the outer one.
The management ports (challtestsrv's 8055, Pebble's 15000) are published on 127.0.0.1 only, at
ports Docker picks: this machine sets records and reads Pebble's issuing root there.

`up()` and `down()` are plans (steps as data) run by the one runner; `up()` returns an `AcmeCa`.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass

from ..errors import VpsError
from ..runner import Runner
from ..steps import Plan, Run
from .kit_plan import TAGS
from .vps_config import BIND, NETWORK, VpsConfig

PEBBLE = "opskit-pebble"
DNS = "opskit-challtestsrv"
HOSTNAME = "pebble.opskit.test"  # a name in the Pebble image's own certificate
DIRECTORY = f"https://{HOSTNAME}:14000/dir"
LABEL = "opskit.acme-ca"
#: Pebble's own HTTPS CA, made when the kit image was built
TLS_CA_PATH = "/etc/pebble/tls/ca.pem"
READY_TIMEOUT_S = 30


def _docker(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout, check=False)


def gather() -> dict[str, str | None]:
    """{container: its state ("running", "exited"...), or None when there is none}."""
    found = {}
    for name in (DNS, PEBBLE):
        done = _docker("container", "inspect", "--format", "{{.State.Status}}", name)
        found[name] = done.stdout.strip() if done.returncode == 0 else None
    return found


def run_argv(name: str, image: str) -> list[str]:
    """`docker run` of one of the two, on the VPS's network; management ports on loopback only."""
    common = ["docker", "run", "--detach", "--name", name, "--label", f"{LABEL}=1", "--network", NETWORK,
              "--restart", "unless-stopped"]
    if name == DNS:
        # no default answer and no challenge servers of its own: only the records set here exist
        return [*common, "--network-alias", "challtestsrv", "--publish", f"{BIND}::8055", image,
                "pebble-challtestsrv", "-defaultIPv4", "", "-defaultIPv6", "", "-http01", "", "-https01", "",
                "-tlsalpn01", ""]
    # Pebble reuses a valid authorization in half of its new orders by default: a domain pointed
    # elsewhere would then get its certificate anyway, now and then; every order is validated here
    return [*common, "--env", "PEBBLE_AUTHZREUSE=0", "--network-alias", "pebble", "--network-alias", HOSTNAME,
            "--publish", f"{BIND}::15000", image]


def plan_up(found: dict[str, str | None], image: str = TAGS["pebble"]) -> Plan:
    """Start what is not running; a stopped container is made anew (Pebble keeps nothing worth it)."""
    plan = Plan("acme-ca.up")
    for name in (DNS, PEBBLE):  # challtestsrv first: Pebble resolves through it
        if found.get(name) == "running":
            continue
        if found.get(name) is not None:
            plan.add(Run(f"remove the stopped {name}", ["docker", "rm", "--force", name]))
        plan.add(Run(f"start {name} on {NETWORK}", run_argv(name, image)))
    return plan


def plan_down(found: dict[str, str | None]) -> Plan:
    plan = Plan("acme-ca.down")
    for name in (PEBBLE, DNS):
        if found.get(name) is not None:
            plan.add(Run(f"remove {name}", ["docker", "rm", "--force", name]))
    return plan


def loopback_port(container: str, port: int) -> int:
    done = _docker("port", container, f"{port}/tcp")
    for line in done.stdout.splitlines():
        host, _, number = line.strip().rpartition(":")
        if host == BIND and number.isdigit():
            return int(number)
    raise VpsError(f"{container} publishes no {port}/tcp on {BIND}: {done.stdout or done.stderr}")


def network_address(container: str) -> str:
    """A container's address on the VPS's network."""
    done = _docker("container", "inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{NETWORK}").IPAddress}}}}',
                   container)
    address = done.stdout.strip()
    if done.returncode != 0 or not address or address == "<no value>":
        raise VpsError(f"{container} is not on {NETWORK}: {done.stderr.strip() or 'no address there'}")
    return address


def vps_address(config: VpsConfig) -> str:
    """The VPS's address on its network: where the domains must resolve for Pebble to validate."""
    return network_address(config.container)


@dataclass(frozen=True)
class AcmeCa:
    """The running pair, as this machine reaches it."""

    dns_port: int
    management_port: int
    tls_ca_pem: str  # trust for Pebble's own HTTPS (Caddy's `acme_ca_root`)

    def _post(self, path: str, body: dict) -> None:
        request = urllib.request.Request(f"http://{BIND}:{self.dns_port}/{path}", data=json.dumps(body).encode())
        urllib.request.urlopen(request, timeout=10).read()

    def point(self, host: str, address: str | None) -> None:
        """`host` resolves to `address` alone for Pebble (None: it resolves to nothing)."""
        self._post("clear-a", {"host": host})  # add-a adds to what the name had
        if address is not None:
            self._post("add-a", {"host": host, "addresses": [address]})

    def issuing_roots(self) -> str:
        """The root Pebble signs certificates with (new at each start of Pebble): what a client of
        the sites must trust, as a browser trusts Let's Encrypt's."""
        context = ssl.create_default_context(cadata=self.tls_ca_pem)
        with urllib.request.urlopen(f"https://{BIND}:{self.management_port}/roots/0", context=context,
                                    timeout=10) as answer:
            return answer.read().decode()


def connect() -> AcmeCa:
    """The running pair, once both answer (Pebble's directory, challtestsrv's API)."""
    tls_ca = _docker("exec", PEBBLE, "cat", TLS_CA_PATH)
    if tls_ca.returncode != 0:
        raise VpsError(f"cannot read Pebble's HTTPS CA from {PEBBLE}: {tls_ca.stderr.strip()} (`acme_ca.up()` first)")
    ca = AcmeCa(loopback_port(DNS, 8055), loopback_port(PEBBLE, 15000), tls_ca.stdout)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            ca.issuing_roots()
            ca.point("opskit-ready.test", None)
            return ca
        except OSError as exc:
            if time.monotonic() > deadline:
                raise VpsError(f"Pebble and challtestsrv did not answer within {READY_TIMEOUT_S}s: {exc}\n"
                               f"more: docker logs {PEBBLE}; docker logs {DNS}") from None
            time.sleep(0.3)


def up(runner: Runner | None = None) -> AcmeCa:
    (runner or Runner()).run(plan_up(gather()))
    return connect()


def down(runner: Runner | None = None) -> None:
    (runner or Runner()).run(plan_down(gather()))
