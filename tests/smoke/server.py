"""What the suite knows about the server, gathered once per run and concurrently.

Each source is one command on the server (or one local probe) that answers many checks; the
session starts the sources its selected tests need, in parallel, as soon as it begins, so the
whole suite costs about as long as its slowest source (the SSE check).
"""

from __future__ import annotations

import json
import shlex
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from opskit import smoke
from opskit.errors import OpskitError
from opskit.ssh import Completed

from .remote import Remote, ssh_auth_methods
from .web import SseResult, Web, sse_check


class GatherError(OpskitError):
    """A fact could not be read from the server; says which command and why."""


def _checked(done: Completed, what: str, more: str, ok=(0,)) -> str:
    if done.returncode not in ok:
        tail = "\n".join(done.output.strip().splitlines()[-8:])
        raise GatherError(f"could not read {what} (exit {done.returncode}): {tail}\nmore: {more}")
    return done.stdout.decode(errors="replace")


# -- facts ----------------------------------------------------------------------------------------


@dataclass
class HostFacts:
    sshd: smoke.Sshd
    sshd_files: dict
    listeners: list
    docker_version: str
    compose_version: str
    docker_root: str
    disk: dict  # "remote_dir" | "root" | "docker_root" -> Space (KB)
    inodes: dict  # same keys -> Space (inodes)
    timedatectl: str
    chrony: str
    adjtimex: str


@dataclass
class Clock:
    server: float
    local: float  # this machine's time halfway through the round trip
    uncertainty: float  # half the round trip


@dataclass
class ReleaseFacts:
    link: str  # what `current` points at (relative)
    path: str  # the release folder it resolves to
    manifest: dict | None
    manifest_error: str
    stats: dict  # path -> Stat
    sha256: dict  # relative path -> digest
    live_caddyfile_sha256: str
    compose_file: str
    caddyfile: str
    live_caddyfile: str
    lock: str

    @property
    def id(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1] if self.path else ""


@dataclass
class DockerFacts:
    containers: list  # Container, one-off ones excluded
    images: dict  # ref -> image id

    def of(self, service: str) -> list:
        return [c for c in self.containers if c.service == service]

    def one(self, service: str):
        """The container serving `service` (the running one first, then the newest)."""
        found = self.of(service)
        if not found:
            return None
        return sorted(found, key=lambda c: (c.is_running, c.started_at or 0), reverse=True)[0]


@dataclass
class ComposePlan:
    actions: dict  # container name -> what `compose up` would do (Running when up to date)
    output: str


@dataclass
class CaddyFacts:
    config: dict
    sites: dict  # host -> handlers
    root_pem: str | None


@dataclass
class PgAdmin:
    roles: dict  # name -> {super, createdb, createrole, login, connlimit, bypassrls}
    db_owner: str
    schema_owner: str
    ui_privileges: dict  # schema_create, schema_usage, db_create, db_connect -> bool
    tables: dict  # name -> {owner, select, insert, update, delete, truncate, references, trigger}
    sequences: dict  # name -> usage
    default_acls: dict  # objtype -> acl text
    connections: int | None
    max_connections: int | None
    reserved_connections: int | None
    role_connections: dict
    alembic: list
    errors: str


@dataclass
class PgUi:
    user: str | None
    read_ok: bool
    created: bool
    errors: str
    returncode: int


@dataclass
class RedisFacts:
    without_password: str
    with_password: str


# -- gathering ------------------------------------------------------------------------------------


class Server:
    """Lazy, concurrent sources of facts. `get(name)` starts a source if needed and waits."""

    SOURCES = ("host", "clock", "release", "docker", "plan", "caddy", "logs", "pg_admin", "pg_ui", "redis",
               "probe", "sse", "sshd_auth")

    def __init__(self, env, remote: Remote, web_address: tuple):
        self.env, self.remote = env, remote
        self.web_address = web_address  # (address, http_port, https_port)
        self.pool = ThreadPoolExecutor(max_workers=len(self.SOURCES) + 2, thread_name_prefix="smoke")
        self.futures: dict[str, Future] = {}
        self.want_sse = False
        self._probe: ProbeSession | None = None
        self._probe_lock = threading.Lock()
        self.started = time.monotonic()

    # -- plumbing

    def prefetch(self, names) -> None:
        for name in names:
            self._future(name)

    def _future(self, name: str) -> Future:
        if name not in self.futures:
            self.futures[name] = self.pool.submit(getattr(self, f"_gather_{name}"))
        return self.futures[name]

    def get(self, name: str):
        return self._future(name).result()

    def close(self) -> None:
        if self._probe is not None:
            # stdin closed, the probe ends by itself (at most its beat wait later): don't wait for it
            self._probe.process.finish(timeout=0.5)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def compose_hint(self, *args) -> str:
        return smoke.compose_hint(self.env, *args)

    def release_compose_hint(self, *args) -> str:
        """A compose command on the current release's own file (for what the file says)."""
        cur = f"{self.env.remote_dir}/current"
        return shlex.join(["docker", "compose", "--project-directory", cur, "-f", f"{cur}/docker-compose.yml", *args])

    # -- sources

    def _gather_host(self) -> HostFacts:
        done = self.remote.run(smoke.host_script(self.env), timeout=60)
        s = smoke.sections(_checked(done, "host facts", "docker info; df -h"))
        files = smoke.sshd_files(s.get("sshd_files", ""))
        paths = list(smoke.df(s.get("df", "")).keys())
        disk_by_path, inodes_by_path = smoke.df(s.get("df", "")), smoke.df(s.get("dfi", ""))
        docker_root = s.get("docker_root", "").strip()
        names = {"remote_dir": paths[0] if paths else None, "root": "/", "docker_root": docker_root or None}
        return HostFacts(
            sshd=smoke.sshd_config(files),
            sshd_files=files,
            listeners=smoke.tcp_listeners(s.get("tcp", ""), s.get("tcp6", "")),
            docker_version=s.get("docker", "").strip(),
            compose_version=s.get("compose", "").strip(),
            docker_root=docker_root,
            disk={k: disk_by_path.get(p) for k, p in names.items()},
            inodes={k: inodes_by_path.get(p) for k, p in names.items()},
            timedatectl=s.get("timedatectl", "").strip(),
            chrony=s.get("chrony", "").strip(),
            adjtimex=s.get("adjtimex", "").strip(),
        )

    def _gather_clock(self) -> Clock:
        best = None
        for _ in range(3):  # keep the shortest round trip
            t0 = time.time()
            done = self.remote.run(["date", "+%s.%N"], timeout=15)
            t1 = time.time()
            server = float(_checked(done, "the server's clock", "date").strip())
            sample = Clock(server, (t0 + t1) / 2, (t1 - t0) / 2)
            if best is None or sample.uncertainty < best.uncertainty:
                best = sample
        return best

    def _gather_release(self) -> ReleaseFacts:
        done = self.remote.run(smoke.release_script(self.env), timeout=60)
        s = smoke.sections(_checked(done, "the current release", f"ls -l {self.env.remote_dir}"))
        manifest, error = None, ""
        try:
            manifest = json.loads(s.get("manifest", ""))
        except ValueError:
            error = s.get("manifest", "").strip()[-300:] or "empty"
        live = smoke.sha256_lines(s.get("live_caddyfile_sha256", ""))
        return ReleaseFacts(
            link=s.get("current", "").strip(),
            path=s.get("real", "").strip(),
            manifest=manifest,
            manifest_error=error,
            stats=smoke.stats(s.get("stat", "")),
            sha256=smoke.sha256_lines(s.get("sha256", "")),
            live_caddyfile_sha256=next(iter(live.values()), ""),
            compose_file=s.get("compose_file", ""),
            caddyfile=s.get("caddyfile", ""),
            live_caddyfile=s.get("live_caddyfile", ""),
            lock=s.get("lock", "").strip(),
        )

    def _gather_docker(self) -> DockerFacts:
        done = self.remote.run(smoke.docker_script(self.env), timeout=60)
        s = smoke.sections(_checked(done, "the containers", "docker ps -a"))
        try:
            found = [c for c in smoke.containers(s.get("inspect", "[]")) if not c.oneoff]
        except ValueError as exc:
            raise GatherError(f"docker inspect gave no JSON: {exc}\nmore: docker ps -a") from None
        return DockerFacts(found, smoke.image_ids(s.get("images", "")))

    def _gather_plan(self) -> "ComposePlan":
        done = self.remote.run(smoke.compose_plan_script(self.env), timeout=60)
        text = done.stdout.decode(errors="replace")
        return ComposePlan(smoke.compose_plan(text), text.strip()[-500:])

    def _gather_caddy(self) -> CaddyFacts:
        done = self.remote.run(smoke.caddy_script(self.env), timeout=30)
        s = smoke.sections(_checked(done, "Caddy's running config", self.compose_hint("logs", "--tail", "50", "caddy")))
        try:
            config = json.loads(s.get("config", "") or "null") or {}
        except ValueError:
            raise GatherError("Caddy's admin API gave no JSON config\nmore: "
                              + self.compose_hint("exec", "caddy", "wget", "-qO-", "http://127.0.0.1:2019/config/")) from None
        root = s.get("root")
        if not self.env.tls.is_acme and (not root or "BEGIN CERTIFICATE" not in root):
            raise GatherError("no root certificate of Caddy's local CA in the caddy container "
                              "(/data/caddy/pki/authorities/local/root.crt)\nmore: "
                              + self.compose_hint("logs", "--tail", "50", "caddy"))
        return CaddyFacts(config, smoke.caddy_sites(config), root if root else None)

    def _gather_logs(self) -> list:
        done = self.remote.run(smoke.logs_script(self.env), timeout=60)
        return smoke.log_hits(_checked(done, "the container logs", self.compose_hint("logs")))

    def _gather_pg_admin(self) -> PgAdmin:
        argv, sql = smoke.pg_admin_script(self.env)
        done = self.remote.run(argv, stdin=sql, timeout=30)
        out = _checked(done, f"Postgres as {self.env.postgres.admin_role}", self.compose_hint("logs", "--tail", "50", "postgres"))
        roles, ui_priv, tables, seqs, acls, role_conns, alembic = {}, {}, {}, {}, {}, {}, []
        db_owner = schema_owner = ""
        conns = maxc = reserved = None
        for row in smoke.psql_rows(out):
            kind, rest = row[0], row[1:]
            if kind == "role" and len(rest) == 7:
                roles[rest[0]] = {"super": smoke.pg_bool(rest[1]), "createdb": smoke.pg_bool(rest[2]),
                                  "createrole": smoke.pg_bool(rest[3]), "login": smoke.pg_bool(rest[4]),
                                  "connlimit": int(rest[5]), "bypassrls": smoke.pg_bool(rest[6])}
            elif kind == "db_owner":
                db_owner = rest[0]
            elif kind == "schema_owner":
                schema_owner = rest[0]
            elif kind == "ui_priv" and len(rest) == 2:
                ui_priv[rest[0]] = smoke.pg_bool(rest[1])
            elif kind == "table" and len(rest) == 9:
                keys = ("select", "insert", "update", "delete", "truncate", "references", "trigger")
                tables[rest[0]] = {"owner": rest[1], **{k: smoke.pg_bool(v) for k, v in zip(keys, rest[2:])}}
            elif kind == "sequence" and len(rest) == 2:
                seqs[rest[0]] = smoke.pg_bool(rest[1])
            elif kind == "default_acl" and len(rest) == 2:
                acls[rest[0]] = rest[1]
            elif kind == "connections":
                conns = int(rest[0])
            elif kind == "max_connections":
                maxc = int(rest[0])
            elif kind == "reserved_connections":
                reserved = int(rest[0])
            elif kind == "role_connections" and len(rest) == 2:
                role_conns[rest[0]] = int(rest[1])
            elif kind == "alembic":
                alembic.append(rest[0])
        return PgAdmin(roles, db_owner, schema_owner, ui_priv, tables, seqs, acls, conns, maxc, reserved,
                       role_conns, sorted(alembic), done.stderr.decode(errors="replace"))

    def _gather_pg_ui(self) -> PgUi:
        argv, stdin = smoke.pg_ui_script(self.env)
        done = self.remote.run(argv, stdin=stdin, timeout=30)
        out = done.stdout.decode(errors="replace")
        user, read_ok, created = None, False, False
        for row in smoke.psql_rows(out):
            if row[0] == "login" and len(row) > 1:
                user = row[1]
            elif row[0] == "read_runs":
                read_ok = True
            elif row[0] == "created":
                created = True
        return PgUi(user, read_ok, created, done.stderr.decode(errors="replace"), done.returncode)

    def _gather_redis(self) -> RedisFacts:
        argv, stdin = smoke.redis_script(self.env)
        done = self.remote.run(argv, stdin=stdin, timeout=30)
        s = smoke.sections(_checked(done, "Redis", self.compose_hint("logs", "--tail", "50", "redis")))
        return RedisFacts(s.get("noauth", "").strip(), s.get("auth", "").strip())

    def _start_probe(self) -> "ProbeSession":
        """The probe process, started once (the SSE check may need it before it is ready)."""
        with self._probe_lock:
            if self._probe is None:
                beat_wait = self.env.beat_interval.seconds + 2
                self._probe = ProbeSession(self.remote.start(smoke.probe_argv(self.env, beat_wait)),
                                           beat_wait + self.env.smoke.task_roundtrip.seconds + 30)
            return self._probe

    def _gather_probe(self) -> "ProbeSession":
        session = self._start_probe()
        session.wait("ready", timeout=session.patience)
        if not self.want_sse:
            session.process.close_stdin()
        return session

    def _gather_sse(self) -> SseResult:
        env = self.env
        caddy = self.get("caddy")
        heartbeat = _running_heartbeat(self.get("docker"), env)
        address, http_port, https_port = self.web_address
        web = Web(address, http_port, https_port, caddy.root_pem)
        run_id = str(uuid.uuid4())
        bound = env.smoke.task_roundtrip.seconds
        probe = self._start_probe()

        def trigger():
            ping = probe.wait("ping", timeout=probe.patience)
            if not ping:
                raise RuntimeError("the Celery probe in the api container did not start: "
                                   + (probe.stderr.strip()[-200:] or "no output"))
            if not ping.get("workers"):
                raise RuntimeError("no Celery worker answered ping, so no task can publish the event")
            probe.process.send(f"record_run {run_id}\n")

        try:
            return sse_check(web, env.domains.api, f"/stream/{run_id}",
                             {"X-API-Key": env.secrets["api_key"].reveal()}, heartbeat, bound, trigger, run_id)
        finally:
            probe.process.close_stdin()

    def _gather_sshd_auth(self) -> dict:
        out = {}
        for user in dict.fromkeys((self.env.ssh.user, "root")):
            try:
                out[user] = ssh_auth_methods(self.env.ssh, user)
            except Exception as exc:  # reported by the test that needs it
                out[user] = exc
        return out


class ProbeSession:
    """The probe's answers as they come; `wait(kind)` blocks until that answer is in."""

    def __init__(self, process, patience: float):
        self.process = process
        self.patience = patience  # the longest any answer may take

    @property
    def events(self) -> dict:
        return smoke.probe_events(self.process.lines)

    @property
    def stderr(self) -> str:
        return self.process.stderr.decode(errors="replace")

    def wait(self, kind: str, timeout: float):
        return self.process.wait_for(lambda lines: smoke.probe_events(lines).get(kind), timeout)


def _running_heartbeat(docker: DockerFacts, env) -> float:
    """SSE_HEARTBEAT_SECONDS of the running api container (what the stream really does), else
    the inventory's value."""
    api = docker.one("api")
    raw = api.env.get("SSE_HEARTBEAT_SECONDS") if api else None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return env.sse.heartbeat.seconds
