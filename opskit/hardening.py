"""How each service of the stack is confined, as data: its user, capabilities, root filesystem,
writable paths, PIDs limit, and the networks it joins (issue 13, points 4 and 5).

Every service runs with `no-new-privileges`, `cap_drop: [ALL]`, a read-only root filesystem, a
PIDs limit and a non-root user. What a service needs beyond that is written next to it with its
reason (`why`): a capability added back, a tmpfs, a writable root or a root user (none today).
`render` calls `apply()`, which merges `compose_keys(name)` into each service of the compose file
and adds its top-level `networks:`; `tests/unit/test_hardening.py` checks the rendered file against
tables of its own. The second half of this module reads a running stack (`confined_fact`,
`probe_all`) for `tests/smoke/test_hardening.py` and `test_networks.py`.

Networks by need: two services can talk only when they share a network, so each network joins
exactly the services that must talk (Caddy and what it proxies; the users of Redis; the users of
Postgres), and no pair that must not talk shares one. `internal: true` wherever no member needs to
reach outside the host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# setuid binaries and file capabilities grant nothing past what the container started with
NO_NEW_PRIVILEGES = "no-new-privileges:true"


@dataclass(frozen=True)
class Tmpfs:
    path: str
    size: str  # counts against the container's memory limit: a bound, not a reservation
    why: str
    options: str = ""  # extra mount options (owner, mode)

    @property
    def compose(self) -> str:
        """`path:options` as Compose's `tmpfs:` list takes it."""
        return f"{self.path}:" + ",".join(o for o in (f"size={self.size}", self.options) if o)


@dataclass(frozen=True)
class Capability:
    name: str
    why: str


@dataclass(frozen=True)
class Confinement:
    """One service's confinement. A field that weakens the default carries its reason."""

    user: str | None  # "uid:gid" (numeric: works whatever the image's /etc/passwd holds) or a name
    pids_limit: int
    tmpfs: tuple = ()  # Tmpfs
    cap_add: tuple = ()  # Capability
    read_only: bool = True
    why_writable: str = ""  # required when read_only is False
    why_root: str = ""  # required when user is None (the image's default, root)
    notes: str = ""  # decisions that are not exceptions (what is on a volume and why)

    def problems(self, name: str) -> list[str]:
        out = []
        if not self.read_only and not self.why_writable:
            out.append(f"{name}: a writable root filesystem needs its reason (why_writable)")
        if self.user is None and not self.why_root:
            out.append(f"{name}: running as the image's user (root) needs its reason (why_root)")
        if self.user in ("root", "0", "0:0"):
            out.append(f"{name}: user {self.user!r} is root; leave user None with why_root to document it")
        out += [f"{name}: capability {c.name} needs its reason" for c in self.cap_add if not c.why]
        out += [f"{name}: tmpfs {t.path} needs its reason" for t in self.tmpfs if not t.why]
        if self.pids_limit <= 0:
            out.append(f"{name}: pids_limit must be positive")
        return out


TMP_PYTHON = Tmpfs("/tmp", "64m", "Python's tempfile and libraries write their scratch files here; nothing in "
                   "/tmp needs to outlive the container")

# uid:gid of the sample app's images (tests/fixtures/app: `app` 10001 in the API image, `web` 10002
# in the frontend's). Numeric, so an image without those names still runs unprivileged; the code
# stays root-owned and world-readable, so these users read it and cannot change it.
APP_USER = "10001:10001"
WEB_USER = "10002:10002"
# uid/gid 999 is `postgres` in the official postgres image and `redis` in the official redis image
# (and in the kit's stand-ins), so data volumes keep the same owner.
POSTGRES_USER = "999:999"
REDIS_USER = "999:999"
# images/caddy makes the user `caddy` with this fixed uid, owner of /data and /config (the image's
# volumes, so a new volume starts owned by it); as digits, which the official caddy:2 image (no such
# user) accepts too.
CADDY_USER = "10001:10001"

SERVICES: dict[str, Confinement] = {
    "postgres": Confinement(
        # Started as its user, the entrypoint skips its root-only part (chown of PGDATA, then
        # setpriv to postgres), so no capability is needed: not CHOWN, DAC_OVERRIDE, FOWNER,
        # SETUID or SETGID. A fresh volume is created postgres-owned from the image's PGDATA, and
        # an existing one was chowned by the root entrypoint of earlier releases.
        user=POSTGRES_USER, pids_limit=200,
        tmpfs=(
            Tmpfs("/var/run/postgresql", "1m", "the unix socket and its lock file (pg_isready, the init "
                  "scripts and `docker exec psql` connect there)", "uid=999,gid=999,mode=0775"),
            Tmpfs("/tmp", "16m", "bash writes long here-documents of the first-boot init scripts there"),
        ),
        notes="PGDATA is the postgres_data volume; the backends (connection_limit admin + ui, under "
              "max_connections 100) plus background workers stay well under the PIDs limit"),
    "redis": Confinement(
        user=REDIS_USER, pids_limit=64,
        notes="the append-only file and RDB snapshots are on the redis_data volume (/data), its only writes"),
    "api": Confinement(user=APP_USER, pids_limit=256, tmpfs=(TMP_PYTHON,)),
    "worker": Confinement(
        user=APP_USER, pids_limit=256, tmpfs=(TMP_PYTHON,),
        notes="the prefork pool's semaphores live in /dev/shm, a tmpfs Docker mounts apart from the root"),
    "beat": Confinement(
        user=APP_USER, pids_limit=64,
        tmpfs=(Tmpfs("/tmp", "16m", "celery beat keeps its schedule file there (`--schedule "
                     "/tmp/celerybeat-schedule`, which `python -m app.health beat` reads); it holds only "
                     "last-run times, so losing it on a restart runs each periodic task once early at most"),),
    ),
    "flower": Confinement(
        user=APP_USER, pids_limit=64, tmpfs=(TMP_PYTHON,),
        notes="started without --persistent, so it writes no database file"),
    "frontend": Confinement(
        user=WEB_USER, pids_limit=128,
        tmpfs=(Tmpfs("/tmp", "64m", "node's scratch files (a real Next.js image also needs /app/.next/cache "
                     "writable: add a tmpfs there)"),),
    ),
    "caddy": Confinement(
        user=CADDY_USER, pids_limit=256,
        cap_add=(Capability("NET_BIND_SERVICE", "binding 80 and 443 as a non-root user: images/caddy gives "
                            "the binary this file capability, and the kernel refuses to exec a binary "
                            "whose file capability the container's bounding set lacks (Docker's "
                            "ip_unprivileged_port_start=0 alone would not need it; the image decides)"),),
        tmpfs=(Tmpfs("/tmp", "16m", "Go's os.TempDir for Caddy's scratch files"),),
        notes="certificates and keys in /data and autosaved config in /config are the caddy_data and "
              "caddy_config volumes; /etc/caddy is the shared folder, read-only"),
}


@dataclass(frozen=True)
class Network:
    members: tuple
    internal: bool
    why: str = field(default="")


NETWORKS: dict[str, Network] = {
    "web": Network(
        ("caddy", "api", "frontend"), internal=False,
        why="Caddy proxies the API and the frontend, and the frontend calls the API; not internal: Caddy "
            "publishes 80/443 and reaches the ACME CA, and the API and the frontend may call outside "
            "services"),
    "flower": Network(
        ("caddy", "flower"), internal=True,
        why="Caddy proxies Flower behind its basic auth; Flower answers on its own port without a "
            "password, so nothing else joins this network"),
    "redis": Network(
        ("redis", "api", "worker", "beat", "flower"), internal=True,
        why="the users of Redis (cache, broker and results). They also reach each other here, which "
            "gives nothing new: each already holds the broker's credentials"),
    "db": Network(
        ("postgres", "api", "worker"), internal=False,
        why="the admin role's users. Not internal: Docker publishes a port (Postgres on loopback, for "
            "`invoke db.tunnel`) only through a non-internal network, and the worker's tasks reach "
            "outside APIs through it"),
    "db_ui": Network(
        ("postgres", "frontend"), internal=True,
        why="the frontend's way to Postgres (the UI role), apart from `db` so the frontend reaches no "
            "other member of it"),
}


#: what the probes of a running stack expect (source, target on its port). Left out of both: pairs
#: that share a network without needing each other (the members of the Redis network among
#: themselves; Postgres and Redis reaching their own clients back, as any shared network allows)
MUST_REACH = frozenset({
    ("caddy", "api"), ("caddy", "frontend"), ("caddy", "flower"), ("frontend", "api"), ("frontend", "postgres"),
    ("api", "postgres"), ("worker", "postgres"), ("api", "redis"), ("worker", "redis"), ("beat", "redis"),
    ("flower", "redis"),
})
MUST_NOT_REACH = frozenset({
    ("caddy", "redis"), ("caddy", "postgres"), ("frontend", "redis"), ("frontend", "flower"), ("beat", "postgres"),
    ("flower", "postgres"), ("beat", "frontend"), ("flower", "frontend"), ("worker", "frontend"),
    ("redis", "postgres"), ("postgres", "redis"), ("postgres", "flower"), ("redis", "frontend"),
})


#: docker-bench-security's section 5 warnings (tests/5_container_runtime.sh of
#: github.com/docker/docker-bench-security) that the stack keeps on purpose: (check, services, why).
#: Rendered as comments into the compose file; `scripts/docker_bench.py` counts every other one.
BENCH_EXCEPTIONS = (
    ("5.2", "all", ("no AppArmor profile where the host has no AppArmor (the simulated VPS: its kernel "
                   "is the test machine's); on a Debian or Ubuntu server Docker applies docker-default")),
    ("5.8", "caddy", "80 and 443 are privileged ports by definition: Caddy is the public web server"),
    ("5.9", "caddy postgres", ("the ports the stack publishes on purpose: Caddy's 80/443 (tcp, udp for "
                              "HTTP/3), Postgres on loopback for `invoke db.tunnel`")),
    ("5.14", "caddy", ("the public web server listens on every address of the host; Postgres is bound to "
                      "loopback")),
)


def problems() -> list[str]:
    """What is undocumented or inconsistent in the data above (a unit test keeps this empty)."""
    out = [p for name, c in SERVICES.items() for p in c.problems(name)]
    members = {m for n in NETWORKS.values() for m in n.members}
    out += [f"networks: {name} is on no network" for name in SERVICES if name not in members]
    out += [f"networks: {m} is not a service" for m in sorted(members - set(SERVICES))]
    out += [f"networks.{name}: its reason is missing" for name, n in NETWORKS.items() if not n.why]
    return out


def networks_of(service: str) -> list[str]:
    return sorted(name for name, n in NETWORKS.items() if service in n.members)


def compose_keys(service: str) -> dict:
    """The keys of `service` in the compose file's context: its user, security options,
    capabilities, root filesystem, tmpfs mounts, PIDs limit and networks."""
    c = SERVICES[service]
    return {
        "user": c.user,
        "security_opt": [NO_NEW_PRIVILEGES],
        "cap_drop": ["ALL"],
        "cap_add": [cap.name for cap in c.cap_add],
        "read_only": c.read_only,
        "tmpfs": [t.compose for t in c.tmpfs],
        "pids_limit": c.pids_limit,
        "networks": networks_of(service),
    }


def apply(context: dict) -> dict:
    """Merge each service's confinement into the compose context, and the top-level networks.
    A service with no decision here stops the render: a new service must be given one."""
    missing = [svc["name"] for svc in context["services"] if svc["name"] not in SERVICES]
    if missing:
        from .errors import RenderError

        raise RenderError(f"opskit/hardening.py has no confinement for {', '.join(missing)}: add one "
                          "(user, capabilities, writable paths, PIDs limit, networks) with its reasons")
    for svc in context["services"]:
        svc.update(compose_keys(svc["name"]))
    context["networks"] = [{"name": name, "internal": n.internal} for name, n in sorted(NETWORKS.items())]
    context["bench_exceptions"] = list(BENCH_EXCEPTIONS)
    return context


# -- what a running server shows: the facts the smoke suite and the integration test read -----------


#: the port each service that listens answers on inside its networks (api, frontend and flower
#: come from the inventory: `ports(env)`)
INFRA_PORTS = {"redis": 6379, "postgres": 5432}


def ports(env) -> dict[str, int]:
    """{service: port} of every service something connects to."""
    return {**{name: env.services[name].port for name in ("api", "flower", "frontend")}, **INFRA_PORTS}


@dataclass(frozen=True)
class Confined:
    """A running container's confinement as `docker inspect` reports it."""

    service: str
    name: str
    id: str
    image_ref: str
    running: bool
    user: str  # Config.User: compose's `user:` or the image's USER; "" means root
    security_opt: tuple
    cap_drop: tuple
    cap_add: tuple
    read_only: bool
    pids_limit: int  # 0 or negative: unlimited
    privileged: bool
    networks: dict  # network name -> container IP address on it

    @property
    def is_root(self) -> bool:
        return self.user.split(":")[0] in ("", "root", "0")

    @property
    def has_no_new_privileges(self) -> bool:
        return any(o.replace("=", ":") in ("no-new-privileges", "no-new-privileges:true") for o in self.security_opt)

    @property
    def drops_all_capabilities(self) -> bool:
        return any(c.upper() in ("ALL", "CAP_ALL") for c in self.cap_drop)


def parse_confined(inspect_json: str) -> list[Confined]:
    """`docker inspect` of containers -> Confined, one-off containers (`compose run`) left out."""
    from .layout import ONEOFF_LABEL, SERVICE_LABEL

    out = []
    for c in json.loads(inspect_json or "[]"):
        config, host = c.get("Config") or {}, c.get("HostConfig") or {}
        labels = config.get("Labels") or {}
        if labels.get(ONEOFF_LABEL, "False").lower() == "true":
            continue
        nets = ((c.get("NetworkSettings") or {}).get("Networks") or {})
        out.append(Confined(
            service=labels.get(SERVICE_LABEL, "?"), name=(c.get("Name") or "").lstrip("/"), id=c.get("Id", ""),
            image_ref=config.get("Image", ""), running=bool((c.get("State") or {}).get("Running")),
            user=config.get("User") or "", security_opt=tuple(host.get("SecurityOpt") or ()),
            cap_drop=tuple(host.get("CapDrop") or ()), cap_add=tuple(host.get("CapAdd") or ()),
            read_only=bool(host.get("ReadonlyRootfs")), pids_limit=int(host.get("PidsLimit") or 0),
            privileged=bool(host.get("Privileged")),
            networks={name: (n or {}).get("IPAddress", "") for name, n in sorted(nets.items())},
        ))
    return out


def confined_fact(project: str):
    """The fact: the confinement of every container of the project."""
    from .facts.base import script
    from .layout import project_filter

    return script("containers.sh", *project_filter(project), parse=parse_confined, name="confinement")


# A probe run in a container's network namespace: each target by name (resolved by Docker's DNS as
# that container sees it) and by each address the target has on any network, all at once. Python
# from the API image, so it works whatever tools the probed image has (Caddy's has none).
PROBE = r"""
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def attempt(host, port):
    try:
        with socket.create_connection((host, port), timeout=2):
            return "open"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        return "error %s" % exc.errno
def one(t):
    try:
        found = sorted({a[4][0] for a in socket.getaddrinfo(t["name"], t["port"], type=socket.SOCK_STREAM)})
    except socket.gaierror:
        found = []
    return t["name"], {"resolved": found, "by_name": attempt(t["name"], t["port"]) if found else "unresolvable",
                       "by_ip": {ip: attempt(ip, t["port"]) for ip in t["ips"]}}
with ThreadPoolExecutor(16) as pool:
    print(json.dumps(dict(pool.map(one, json.loads(sys.argv[1])))))
"""


@dataclass(frozen=True)
class Reach:
    """What one container saw when it tried to reach one service."""

    target: str
    port: int
    resolved: tuple  # addresses the name resolved to ((): unresolvable)
    by_name: str  # open, refused, timeout, unresolvable, error N
    by_ip: dict  # address -> the same outcomes

    @property
    def is_open(self) -> bool:
        return self.by_name == "open" or "open" in self.by_ip.values()

    def __str__(self) -> str:
        ips = ", ".join(f"{ip} {state}" for ip, state in sorted(self.by_ip.items()))
        return f"{self.target}:{self.port} by name {self.by_name}" + (f", by address {ips}" if ips else "")


def probe_argv(container: str, image: str, targets: list[dict]) -> list[str]:
    """A throwaway container in `container`'s network namespace, as confined as the stack's own,
    that tries each target ({"name", "port", "ips"}) and prints what it saw as JSON."""
    return ["docker", "run", "--rm", "--network", f"container:{container}", "--user", APP_USER, "--read-only",
            "--cap-drop", "ALL", "--security-opt", NO_NEW_PRIVILEGES, "--pids-limit", "64", "--log-driver", "none",
            "--entrypoint", "python", image, "-c", PROBE, json.dumps(targets, sort_keys=True)]


def probe_targets(source: Confined, containers: list[Confined], service_ports: dict[str, int]) -> list[dict]:
    """Every listening service but `source` itself, with the addresses its container has."""
    by_service = {c.service: c for c in containers if c.running}
    return [{"name": name, "port": port, "ips": sorted(ip for ip in by_service[name].networks.values() if ip)
             if name in by_service else []}
            for name, port in sorted(service_ports.items()) if name != source.service]


def parse_probe(text: str, targets: list[dict]) -> dict[str, Reach]:
    """The probe's JSON -> {target service: Reach}."""
    seen = json.loads(text.strip().splitlines()[-1])
    return {t["name"]: Reach(t["name"], t["port"], tuple(seen[t["name"]]["resolved"]), seen[t["name"]]["by_name"],
                             dict(seen[t["name"]]["by_ip"])) for t in targets}


def probe_all(connection, containers: list[Confined], service_ports: dict[str, int], image: str,
              parallel: int = 4) -> dict:
    """{(source service, target service): Reach, or the probe's error text} from every running
    container, `parallel` probes at once. `connection.run(argv, timeout=)` gives a Completed."""
    from concurrent.futures import ThreadPoolExecutor

    running = [c for c in containers if c.running]

    def probe(c):
        targets = probe_targets(c, running, service_ports)
        done = connection.run(probe_argv(c.id, image, targets), timeout=90)
        if done.returncode != 0:
            error = done.output.strip()[-300:] or f"exit {done.returncode}"
            return {(c.service, t["name"]): error for t in targets}
        return {(c.service, t): r for t, r in parse_probe(done.stdout.decode(errors="replace"), targets).items()}

    with ThreadPoolExecutor(parallel) as pool:
        return {k: v for found in pool.map(probe, running) for k, v in found.items()}
