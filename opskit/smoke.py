"""`invoke smoke`: the testinfra suite in `tests/smoke/`, pointed at one environment's server.

This module is the suite's library, so that it can be unit-tested without a server:

- how to run it: `pytest_args` and `run` (a subprocess `python -m pytest tests/smoke --env ENV`);
- what it asks the server: shell programs that gather many facts in one SSH round trip each
  (`*_script`), read-only except for the Celery probe, which sends two tasks;
- pure parsers of their output (sections, /proc/net/tcp, sshd_config, df, docker inspect, the
  running Caddy config, psql rows, log matches, stat lines).

Thresholds and expected values come from the Environment (inventory.yaml), never from here.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import posixpath
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

from . import ROOT

SUITE = "tests/smoke"

#: marker -> what the group checks (`-m containers`, `-m "http or celery"`)
MARKERS = {
    "host": "the server itself: sshd, listening ports, Docker and Compose, disk, inodes, clock",
    "containers": "every service of the current release: running, healthy, restart policy, image, logs rotation",
    "exposure": "what is reachable from outside: published ports, Postgres on loopback, Redis password",
    "http": "Caddy and HTTPS: certificates, auth, headers, the running proxy config, SSE through Caddy",
    "postgres": "roles, grants, the UI role's limits, Alembic head, connections in use",
    "celery": "worker ping, beat scheduling, a task round trip",
    "logs": "logs of the running containers are free of the signatures of known incidents",
    "files": "release files: env files 0600 and owned by the deploy user, no secret in config files",
}

#: the compose services every release runs besides the app services of the inventory
INFRA_SERVICES = ("postgres", "redis", "caddy")
#: services that may publish ports on the server, and which
PUBLISHERS = {"caddy": "80/443 for HTTPS", "postgres": "the loopback address of the inventory"}

SECTION = "=====opskit:{}====="
_SECTION_RE = re.compile(r"^=====opskit:([a-z0-9_.-]+)=====$")


@dataclass(frozen=True)
class Signature:
    """A log line that a past incident left behind; finding it again means the incident is back."""

    key: str
    text: str
    incident: str


SIGNATURES = (
    Signature("event_loop_closed", "Event loop is closed",
              "an event loop per Celery task (asyncio.run) closed under pooled clients; "
              "tasks must use run_in_worker_loop (the Worker Lifespan Pattern)"),
    Signature("client_closed", "Cannot send a request, as the client has been closed",
              "a shared HTTP client was closed inside a task (a `finally: aclose()`); "
              "shared clients close once, at process shutdown"),
    Signature("task_exception_never_retrieved", "Task exception was never retrieved",
              "an asyncio task failed and nothing awaited it: its error was lost"),
    Signature("module_not_found", "ModuleNotFoundError",
              "the image lacks a Python module; add it to requirements and to the build's import_checks"),
    Signature("too_many_clients", "too many clients",
              "Postgres refused connections: a connection leak (an engine or pool per request)"),
    Signature("remaining_connection_slots", "remaining connection slots",
              "Postgres ran out of connection slots: a connection leak (an engine or pool per request)"),
)


# -- running the suite ----------------------------------------------------------------------------


def pytest_args(env_name: str, junit: str | Path | None = None, extra=()) -> list[str]:
    """Arguments for pytest (after `python -m pytest`) that run the smoke suite against `env_name`.

    `junit` writes JUnit XML for CI; `extra` passes through (`-k`, `-m`, `-x`, `-vv`...)."""
    args = [str(ROOT / SUITE), "--env", env_name, "--tb=short", "-o", "junit_suite_name=opskit-smoke"]
    if junit:
        args.append(f"--junitxml={junit}")
    args.extend(str(a) for a in extra)
    return args


def run(env_name: str, junit: str | Path | None = None, extra=()) -> int:
    """Run the smoke suite in a subprocess (output goes to this terminal); pytest's exit code."""
    argv = [sys.executable, "-m", "pytest", *pytest_args(env_name, junit, extra)]
    return subprocess.run(argv, cwd=ROOT).returncode


def rerun_hint(env_name: str) -> str:
    """The command (run in the repository) that shows the failures of the last run in full."""
    python = Path(sys.executable)
    try:
        python = python.relative_to(ROOT)
    except ValueError:
        python = Path(python.name)
    return f"{python} -m pytest {SUITE} --env {env_name} --lf -vv"


# -- names ----------------------------------------------------------------------------------------


def expected_services(env) -> tuple[str, ...]:
    """Every compose service of a release of `env` (app services from the inventory, then infra)."""
    return tuple(sorted(env.services)) + INFRA_SERVICES


def env_file_services(env) -> tuple[str, ...]:
    """Services that get `env/<service>.env` (all but Caddy: its config holds no secret)."""
    return tuple(s for s in expected_services(env) if s != "caddy")


def compose_hint(env, *args: str) -> str:
    """A compose command to run on the server (needs no file: the project is found by name)."""
    return shlex.join(["docker", "compose", "-p", env.project, *args])


# -- what the suite asks the server ---------------------------------------------------------------


def _sec(name: str) -> str:
    return f"printf '\\n%s\\n' {shlex.quote(SECTION.format(name))}"


def _container(project: str, service: str) -> str:
    """Shell: the id of the (first) running container of a compose service."""
    return (f"$(docker ps -q --filter label=com.docker.compose.project={shlex.quote(project)} "
            f"--filter label=com.docker.compose.service={shlex.quote(service)} | head -n 1)")


def host_script(env) -> list[str]:
    """sshd config files, TCP listeners, Docker and Compose versions, disk and inodes, time sync."""
    d = shlex.quote(env.remote_dir)
    script = "\n".join([
        "exec 2>&1",
        _sec("sshd_files"),
        "for f in /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*; do [ -f \"$f\" ] || continue; "
        "printf '#####file:%s\\n' \"$f\"; cat \"$f\" 2>/dev/null || echo '#####unreadable'; done",
        _sec("tcp"), "cat /proc/net/tcp",
        _sec("tcp6"), "cat /proc/net/tcp6 2>/dev/null",
        _sec("docker"), "docker version --format '{{.Server.Version}}'",
        _sec("compose"), "docker compose version --short",
        _sec("docker_root"), "docker info --format '{{.DockerRootDir}}'",
        _sec("df"), f"p={d}; while [ ! -d \"$p\" ]; do p=$(dirname \"$p\"); done; "
                    "r=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null); "
                    "for x in \"$p\" / \"$r\"; do [ -n \"$x\" ] && printf '#####path:%s\\n' \"$x\" && df -Pk \"$x\" | tail -n 1; done",
        _sec("dfi"), f"p={d}; while [ ! -d \"$p\" ]; do p=$(dirname \"$p\"); done; "
                     "r=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null); "
                     "for x in \"$p\" / \"$r\"; do [ -n \"$x\" ] && printf '#####path:%s\\n' \"$x\" && df -Pi \"$x\" | tail -n 1; done",
        _sec("timedatectl"), "timedatectl show -p NTPSynchronized --value 2>/dev/null || echo unavailable",
        _sec("chrony"), "chronyc -n tracking 2>/dev/null | grep -i 'leap status' || echo unavailable",
        # adjtimex(2) with modes=0 only reads; 5 (TIME_ERROR) means the kernel clock is unsynchronised
        _sec("adjtimex"), "perl -e '$b=\"\\0\" x 208; print syscall(159, $b), \"\\n\"' 2>/dev/null || echo unavailable",
    ])
    return ["sh", "-c", script]


def release_script(env) -> list[str]:
    """The current release: its link, manifest, file modes and hashes, config files, the lock."""
    d = shlex.quote(env.remote_dir)
    script = "\n".join([
        f"d={d}; cur=\"$d/current\"; real=$(readlink -f \"$cur\")",
        _sec("current"), "readlink \"$cur\"",
        _sec("real"), "echo \"$real\"",
        _sec("manifest"), "cat \"$cur/manifest.json\" 2>&1",
        _sec("stat"), "stat -c '%a|%U|%G|%F|%n' \"$real\" \"$real/env\" \"$real\"/env/* \"$real/docker-compose.yml\" "
                      "\"$real/Caddyfile\" \"$d/caddy/Caddyfile\" \"$d/releases\" 2>&1",
        _sec("sha256"), "cd \"$real\" 2>/dev/null && find . -type f ! -name manifest.json -exec sha256sum {} + 2>&1",
        _sec("live_caddyfile_sha256"), "sha256sum \"$d/caddy/Caddyfile\" 2>&1",
        _sec("compose_file"), "cat \"$real/docker-compose.yml\" 2>&1",
        _sec("caddyfile"), "cat \"$real/Caddyfile\" 2>&1",
        _sec("live_caddyfile"), "cat \"$d/caddy/Caddyfile\" 2>&1",
        _sec("lock"), "cat \"$d/deploy.lock/info\" 2>/dev/null",
        "true",
    ])
    return ["sh", "-c", script]


def docker_script(env) -> list[str]:
    """Every container of the project (one `docker inspect`) and image ids by reference."""
    p = shlex.quote(env.project)
    script = "\n".join([
        _sec("inspect"),
        f"ids=$(docker ps -aq --filter label=com.docker.compose.project={p}); "
        "if [ -n \"$ids\" ]; then docker inspect $ids; else echo '[]'; fi",
        _sec("images"), "docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}'",
    ])
    return ["sh", "-c", script]


def compose_plan_script(env) -> list[str]:
    """What `docker compose up` would do with the current release's file, asked in dry-run mode
    (changes nothing). `config --hash` would be cheaper, but since Compose 2.22 it skips env_file
    and never matches the label of a service that has one (docker/compose#14001)."""
    d = shlex.quote(env.remote_dir)
    return ["sh", "-c", f"real=$(readlink -f {d}/current); "
                        "exec docker compose --project-directory \"$real\" -f \"$real/docker-compose.yml\" "
                        "--dry-run up --no-build -d 2>&1"]


def caddy_script(env) -> list[str]:
    """The running Caddy config (admin API, inside the container) and, for `tls: internal`,
    the root certificate of Caddy's local CA."""
    c = _container(env.project, "caddy")
    lines = [f"c={c}", "[ -n \"$c\" ] || { echo 'no running caddy container' >&2; exit 3; }",
             _sec("config"), "docker exec \"$c\" wget -qO- http://127.0.0.1:2019/config/"]
    if not env.tls.is_acme:
        lines += [_sec("root"), "docker exec \"$c\" cat /data/caddy/pki/authorities/local/root.crt"]
    return ["sh", "-c", "\n".join(lines)]


def logs_script(env, signatures=SIGNATURES, per_container: int = 20) -> list[str]:
    """Lines of every project container's log that hold a known signature (grep runs on the
    server: only matches travel)."""
    p = shlex.quote(env.project)
    patterns = " ".join(f"-e {shlex.quote(s.text)}" for s in signatures)
    script = (
        f"for id in $(docker ps -aq --filter label=com.docker.compose.project={p}); do "
        "printf '#####container:%s\\n' \"$(docker inspect --format "
        "'{{index .Config.Labels \"com.docker.compose.service\"}}|{{.Name}}|{{index .Config.Labels \"com.docker.compose.oneoff\"}}' \"$id\")\"; "
        f"docker logs --timestamps \"$id\" 2>&1 | grep -n -F {patterns} | tail -n {int(per_container)}; done"
    )
    return ["sh", "-c", script]


def pg_admin_script(env) -> tuple[list[str], bytes]:
    """(argv, stdin): facts about roles, grants, Alembic and connections, read as the admin role
    over the container's local socket."""
    pg = env.postgres
    psql = ["psql", "-X", "-q", "-A", "-t", "-F", "\x1f", "-v", "ON_ERROR_STOP=0",
            "-v", f"admin={pg.admin_role}", "-v", f"ui={pg.ui_role}",
            "-U", pg.admin_role, "-d", pg.database, "-f", "-"]
    argv = ["sh", "-c", f"c={_container(env.project, 'postgres')}; "
                        "[ -n \"$c\" ] || { echo 'no running postgres container' >&2; exit 3; }; "
                        "exec docker exec -i \"$c\" " + shlex.join(psql)]
    sql = """\
SELECT 'role', rolname, rolsuper, rolcreatedb, rolcreaterole, rolcanlogin, rolconnlimit, rolbypassrls
  FROM pg_roles WHERE rolname IN (:'admin', :'ui');
SELECT 'db_owner', pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database();
SELECT 'schema_owner', pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public';
SELECT 'ui_priv', 'schema_create', has_schema_privilege(:'ui', 'public', 'CREATE')
  WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
SELECT 'ui_priv', 'schema_usage', has_schema_privilege(:'ui', 'public', 'USAGE')
  WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
SELECT 'ui_priv', 'db_create', has_database_privilege(:'ui', current_database(), 'CREATE')
  WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
SELECT 'ui_priv', 'db_connect', has_database_privilege(:'ui', current_database(), 'CONNECT')
  WHERE EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui');
SELECT 'table', c.relname, pg_get_userbyid(c.relowner),
       has_table_privilege(:'ui', c.oid, 'SELECT'), has_table_privilege(:'ui', c.oid, 'INSERT'),
       has_table_privilege(:'ui', c.oid, 'UPDATE'), has_table_privilege(:'ui', c.oid, 'DELETE'),
       has_table_privilege(:'ui', c.oid, 'TRUNCATE'), has_table_privilege(:'ui', c.oid, 'REFERENCES'),
       has_table_privilege(:'ui', c.oid, 'TRIGGER')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui')
 ORDER BY c.relname;
SELECT 'sequence', c.relname, has_sequence_privilege(:'ui', c.oid, 'USAGE')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'S' AND EXISTS (SELECT FROM pg_roles WHERE rolname = :'ui')
 ORDER BY c.relname;
SELECT 'default_acl', d.defaclobjtype, d.defaclacl::text
  FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
 WHERE n.nspname = 'public' AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = :'admin');
SELECT 'connections', count(*) FROM pg_stat_activity WHERE backend_type = 'client backend';
SELECT 'max_connections', setting FROM pg_settings WHERE name = 'max_connections';
SELECT 'reserved_connections', setting FROM pg_settings WHERE name = 'superuser_reserved_connections';
SELECT 'role_connections', usename, count(*) FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND usename IS NOT NULL GROUP BY usename;
SELECT 'alembic', version_num FROM alembic_version;
"""
    return argv, sql.encode()


PROBE_TABLE = "opskit_smoke_probe"


def pg_ui_script(env) -> tuple[list[str], bytes]:
    """(argv, stdin): log in as the UI role over TCP with its password (first line of stdin,
    never in argv), read an app table, then try CREATE TABLE inside a rolled-back transaction."""
    pg = env.postgres
    psql = ["psql", "-X", "-q", "-A", "-t", "-F", "\x1f", "-v", "ON_ERROR_STOP=0",
            "-h", "127.0.0.1", "-p", "5432", "-U", pg.ui_role, "-d", pg.database, "-w", "-f", "-"]
    inner = "IFS= read -r PGPASSWORD; export PGPASSWORD; exec " + shlex.join(psql)
    argv = ["sh", "-c", f"c={_container(env.project, 'postgres')}; "
                        "[ -n \"$c\" ] || { echo 'no running postgres container' >&2; exit 3; }; "
                        "exec docker exec -i \"$c\" sh -c " + shlex.quote(inner)]
    sql = f"""\
SELECT 'login', current_user;
SELECT 'read_runs', count(*) FROM (SELECT 1 FROM runs LIMIT 1) AS r;
BEGIN;
CREATE TABLE {PROBE_TABLE} (id integer);
SELECT 'created', '{PROBE_TABLE}';
ROLLBACK;
"""
    password = env.secrets["postgres_ui_password"].reveal()
    return argv, (password + "\n").encode() + sql.encode()


def redis_script(env) -> tuple[list[str], bytes]:
    """(argv, stdin): `redis-cli ping` without a password, then AUTH with the inventory's
    password (on stdin) and PING."""
    c = _container(env.project, "redis")
    script = "\n".join([
        f"c={c}", "[ -n \"$c\" ] || { echo 'no running redis container' >&2; exit 3; }",
        _sec("noauth"), "docker exec \"$c\" redis-cli ping 2>&1",
        _sec("auth"), "docker exec -i \"$c\" redis-cli 2>&1",
    ])
    password = env.secrets["redis_password"].reveal()
    quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return ["sh", "-c", script], f"AUTH {quoted}\nPING\n".encode()


#: Runs inside the api container (python -c), prints one JSON object per line (kinds: ping,
#: alembic, roundtrip, beat, ready, record_run). Reads only, apart from two tasks: app.tasks.ping,
#: and app.tasks.record_run for the SSE check when asked on stdin ("record_run RUN_ID", which
#: also writes that run's row); EOF on stdin ends it.
PROBE = r"""
import json, os, sys, threading, time
T0 = time.monotonic()
_lock = threading.Lock()
def out(**kw):
    with _lock:
        print(json.dumps(dict(kw, at=round(time.monotonic() - T0, 2))), flush=True)
bound, beat_max_age, beat_wait = (float(a) for a in sys.argv[1:4])
def beat():
    # beat:last is written by the worker each time beat schedules app.tasks.beat_heartbeat; right
    # after a deploy the first one may still be due, so a stale value is awaited for a while
    try:
        import redis
        client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=3, socket_connect_timeout=3)
        deadline = time.time() + beat_wait
        while True:
            raw = client.get("beat:last")
            age = None if raw is None else time.time() - float(raw)
            if (age is not None and age <= beat_max_age) or time.time() >= deadline:
                break
            time.sleep(0.5)
        client.close()
        out(kind="beat", age=age)
    except Exception as exc:
        out(kind="beat", age=None, error=f"{type(exc).__name__}: {exc}")
threading.Thread(target=beat, name="beat").start()
try:
    # a bare client of the app's broker (the app module would also load SQLAlchemy and the
    # worker's event loop): tasks are sent by name
    from celery import Celery
    app = Celery("opskit-smoke", broker=os.environ["CELERY_BROKER_URL"], backend=os.environ["CELERY_RESULT_BACKEND"])
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
except Exception as exc:
    out(kind="error", step="celery client", error=f"{type(exc).__name__}: {exc}")
    sys.exit(1)
t = time.monotonic()
try:
    replies = app.control.ping(timeout=1.0)
    workers = sorted(n for r in replies for n in r)
    out(kind="ping", workers=workers, seconds=time.monotonic() - t)
except Exception as exc:
    workers = []
    out(kind="ping", workers=[], error=f"{type(exc).__name__}: {exc}")
try:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    out(kind="alembic", heads=sorted(ScriptDirectory.from_config(Config("alembic.ini")).get_heads()))
except Exception as exc:
    out(kind="alembic", heads=[], error=f"{type(exc).__name__}: {exc}")
if workers:
    t = time.monotonic()
    try:
        result = app.send_task("app.tasks.ping").get(timeout=bound)
        out(kind="roundtrip", result=result, seconds=time.monotonic() - t)
    except Exception as exc:
        out(kind="roundtrip", result=None, seconds=time.monotonic() - t, error=f"{type(exc).__name__}: {exc}")
else:
    out(kind="roundtrip", result=None, seconds=0.0, error="not sent: no Celery worker answered ping")
out(kind="ready")
for line in sys.stdin:
    words = line.split()
    if len(words) == 2 and words[0] == "record_run":
        t = time.monotonic()
        try:
            res = app.send_task("app.tasks.record_run", args=[words[1]])
            out(kind="record_run_sent", task_id=res.id)
            value = res.get(timeout=bound)
            out(kind="record_run", result=value, seconds=time.monotonic() - t)
        except Exception as exc:
            out(kind="record_run", result=None, seconds=time.monotonic() - t, error=f"{type(exc).__name__}: {exc}")
"""


def probe_argv(env, beat_wait: float) -> list[str]:
    """The Celery/Alembic probe, run in the api container (it has the broker and the migrations)."""
    bound = env.smoke.task_roundtrip.seconds
    beat_max_age = 3 * env.beat_interval.seconds
    inner = ["python", "-c", PROBE, f"{bound:g}", f"{beat_max_age:g}", f"{beat_wait:g}"]
    return ["sh", "-c", f"c={_container(env.project, 'api')}; "
                        "[ -n \"$c\" ] || { echo 'no running api container' >&2; exit 3; }; "
                        "exec docker exec -i \"$c\" " + shlex.join(inner)]


# -- parsers --------------------------------------------------------------------------------------


def sections(text: str) -> dict[str, str]:
    """Split a script's output at its `=====opskit:NAME=====` lines."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = _SECTION_RE.match(line.strip())
        if m:
            current = m.group(1)
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v).strip("\n") for k, v in out.items()}


def marked_blocks(text: str, mark: str) -> list[tuple[str, str]]:
    """Split text at `#####MARK:VALUE` lines: [(value, block)] in order."""
    out: list[tuple[str, list[str]]] = []
    prefix = f"#####{mark}:"
    for line in text.splitlines():
        if line.startswith(prefix):
            out.append((line[len(prefix):], []))
        elif out:
            out[-1][1].append(line)
    return [(k, "\n".join(v)) for k, v in out]


@dataclass(frozen=True, order=True)
class Listener:
    address: str
    port: int

    @property
    def is_public(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return not ip.is_loopback

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


def _hex_ipv4(h: str) -> str:
    return str(ipaddress.IPv4Address(bytes.fromhex(h)[::-1]))


def _hex_ipv6(h: str) -> str:
    raw = bytes.fromhex(h)
    # four 32-bit words, each in host (little-endian) order
    return str(ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))


def tcp_listeners(proc_net_tcp: str, proc_net_tcp6: str = "") -> list[Listener]:
    """Listening TCP sockets from /proc/net/tcp and /proc/net/tcp6 (state 0A), sorted, unique."""
    found = set()
    for text, conv in ((proc_net_tcp, _hex_ipv4), (proc_net_tcp6, _hex_ipv6)):
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 4 or ":" not in fields[1] or fields[0] == "sl":
                continue
            if fields[3] != "0A":
                continue
            addr, _, port = fields[1].partition(":")
            try:
                found.add(Listener(conv(addr), int(port, 16)))
            except ValueError:
                continue
    return sorted(found)


@dataclass(frozen=True)
class Sshd:
    """The effective global settings of sshd_config (first value wins, as in sshd)."""

    options: dict  # lower-case keyword -> first value (lower-case)
    ports: tuple
    match_overrides: tuple = ()  # (match line, keyword, value) set inside Match blocks
    unreadable: tuple = ()

    DEFAULTS = {"passwordauthentication": "yes", "kbdinteractiveauthentication": "yes",
                "permitrootlogin": "prohibit-password", "permitemptypasswords": "no",
                "pubkeyauthentication": "yes"}

    def get(self, key: str) -> str:
        key = key.lower()
        return self.options.get(key, self.DEFAULTS.get(key, ""))


_ALIASES = {"challengeresponseauthentication": "kbdinteractiveauthentication"}


def sshd_config(files: dict[str, str | None], main: str = "/etc/ssh/sshd_config") -> Sshd:
    """Parse sshd_config as sshd does for the global section: `Include` (globs, relative to
    /etc/ssh) is expanded in place, the first value of a keyword wins, `Match` starts a
    conditional block that lasts to the end of its file. `files` maps path -> text (None when
    unreadable)."""
    options: dict[str, str] = {}
    ports: list[str] = []
    overrides: list[tuple[str, str, str]] = []
    unreadable: list[str] = []
    seen: set[str] = set()

    def walk(path: str, depth: int = 0) -> None:
        if path in seen or depth > 8:
            return
        seen.add(path)
        text = files.get(path)
        if text is None:
            if path in files:
                unreadable.append(path)
            return
        match = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = re.split(r"\s*=\s*|\s+", line, maxsplit=1)
            key, value = parts[0].lower(), (parts[1].strip() if len(parts) > 1 else "")
            key = _ALIASES.get(key, key)
            if key == "include":
                for pattern in shlex.split(value):
                    full = pattern if pattern.startswith("/") else posixpath.join("/etc/ssh", pattern)
                    for candidate in sorted(p for p in files if fnmatch.fnmatchcase(p, full)):
                        walk(candidate, depth + 1)
                continue
            if key == "match":
                match = line
                continue
            if match is not None:
                overrides.append((match, key, value.lower()))
                continue
            if key == "port":
                ports.append(value)
            options.setdefault(key, value.lower())

    walk(main)
    return Sshd(options, tuple(ports or ["22"]), tuple(overrides), tuple(unreadable))


def sshd_files(section: str) -> dict[str, str | None]:
    """The `sshd_files` section of `host_script`: path -> text (None when unreadable)."""
    out: dict[str, str | None] = {}
    for path, block in marked_blocks(section, "file"):
        out[path] = None if block.strip() == "#####unreadable" else block
    return out


@dataclass(frozen=True)
class Space:
    path: str
    total: int
    available: int  # KB for disk, count for inodes

    @property
    def free_percent(self) -> float | None:
        return None if self.total <= 0 else 100.0 * self.available / self.total


def df(section: str) -> dict[str, Space]:
    """`df -Pk` / `df -Pi` lines after `#####path:` marks -> {path: Space}."""
    out = {}
    for path, block in marked_blocks(section, "path"):
        fields = block.split()
        if len(fields) >= 6 and fields[1].lstrip("-").isdigit() and fields[3].lstrip("-").isdigit():
            out[path] = Space(path, int(fields[1]), int(fields[3]))
    return out


def parse_time(value: str) -> float | None:
    """Docker's RFC 3339 times (nanoseconds) -> unix seconds; None for the zero time."""
    if not value or value.startswith("0001-"):
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not m:
        return None
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")
    tz = timezone.utc
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        hh, mm = m.group(3)[1:].split(":")
        tz = timezone(sign * timedelta(hours=int(hh), minutes=int(mm)))
    frac = float("0" + m.group(2)) if m.group(2) else 0.0
    return base.replace(tzinfo=tz).timestamp() + frac


@dataclass(frozen=True)
class Port:
    container_port: str  # "6379/tcp"
    host_ip: str  # "" or "0.0.0.0" or "::" mean every address
    host_port: str

    @property
    def is_public(self) -> bool:
        if self.host_ip in ("", "0.0.0.0", "::"):
            return True
        try:
            ip = ipaddress.ip_address(self.host_ip)
        except ValueError:
            return True
        return not ip.is_loopback

    def __str__(self) -> str:
        host = self.host_ip or "0.0.0.0"
        return f"{host}:{self.host_port}->{self.container_port}"


@dataclass(frozen=True)
class Container:
    service: str
    name: str
    id: str
    image_ref: str  # Config.Image, the reference the container was created from
    image_id: str  # the image it actually runs
    status: str  # running, exited, restarting, paused, created, dead
    health: str | None  # healthy, unhealthy, starting, or None (no healthcheck)
    exit_code: int
    oom_killed: bool
    started_at: float | None
    restart_count: int
    restart_policy: str
    log_driver: str
    log_options: dict
    ports: tuple  # Port, from both the configured bindings and the live ones
    config_hash: str | None
    oneoff: bool = False
    env: dict = field(default_factory=dict, repr=False, compare=False)  # holds secrets: never print

    @property
    def is_running(self) -> bool:
        return self.status == "running"

    @property
    def short_id(self) -> str:
        return self.id[:12]


def _ports(inspect: dict) -> tuple:
    found = set()
    bindings = (inspect.get("HostConfig") or {}).get("PortBindings") or {}
    live = (inspect.get("NetworkSettings") or {}).get("Ports") or {}
    for source in (bindings, live):
        for cport, binds in source.items():
            for b in binds or []:
                found.add(Port(cport, b.get("HostIp") or "", str(b.get("HostPort") or "")))
    return tuple(sorted(found, key=str))


def containers(inspect_json: str) -> list[Container]:
    """`docker inspect` of the project's containers -> Container facts (one-off containers marked)."""
    out = []
    for c in json.loads(inspect_json or "[]"):
        labels = (c.get("Config") or {}).get("Labels") or {}
        state = c.get("State") or {}
        host = c.get("HostConfig") or {}
        log = host.get("LogConfig") or {}
        env = {}
        for item in (c.get("Config") or {}).get("Env") or []:
            k, _, v = item.partition("=")
            env[k] = v
        out.append(Container(
            service=labels.get("com.docker.compose.service", "?"),
            name=(c.get("Name") or "").lstrip("/"),
            id=c.get("Id", ""),
            image_ref=(c.get("Config") or {}).get("Image", ""),
            image_id=c.get("Image", ""),
            status=state.get("Status", "unknown"),
            health=(state.get("Health") or {}).get("Status"),
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=parse_time(state.get("StartedAt", "")),
            restart_count=int(c.get("RestartCount") or 0),
            restart_policy=(host.get("RestartPolicy") or {}).get("Name", ""),
            log_driver=log.get("Type", ""),
            log_options=dict(log.get("Config") or {}),
            ports=_ports(c),
            config_hash=labels.get("com.docker.compose.config-hash"),
            oneoff=labels.get("com.docker.compose.oneoff", "False").lower() == "true",
            env=env,
        ))
    return out


def image_ids(listing: str) -> dict[str, str]:
    """`docker image ls --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}'` -> {ref: id}."""
    out = {}
    for line in listing.splitlines():
        ref, _, image_id = line.strip().rpartition(" ")
        if ref and image_id.startswith("sha256:") and "<none>" not in ref:
            out[ref] = image_id
    return out


_DRY_RUN = re.compile(r"^\s*DRY-RUN MODE -\s+Container\s+(\S+)\s+(\w+)")


def compose_plan(text: str) -> dict[str, str]:
    """`docker compose --dry-run up` output -> {container name: the first thing compose would do}:
    `Running` means up to date; `Recreate`, `Create`, `Start` mean the container is not what the
    file describes."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _DRY_RUN.match(line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out


def duration_seconds(value) -> float | None:
    """A Caddy JSON duration: integer nanoseconds, or a Go duration string ("600s", "1m30s")."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1e9
    if isinstance(value, str):
        units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", value)
        if parts and "".join(n + u for n, u in parts) == value:
            return sum(float(n) * units[u] for n, u in parts)
    return None


def _handlers(routes) -> list[dict]:
    """Every handler in `routes`, subroutes flattened, in order."""
    out = []
    for route in routes or []:
        for handler in route.get("handle") or []:
            out.append(handler)
            if handler.get("handler") == "subroute":
                out.extend(_handlers(handler.get("routes")))
    return out


def caddy_sites(config: dict) -> dict[str, list[dict]]:
    """The running Caddy config -> {host name: its handlers (subroutes flattened)}."""
    sites: dict[str, list[dict]] = {}
    servers = (((config or {}).get("apps") or {}).get("http") or {}).get("servers") or {}
    for server in servers.values():
        for route in server.get("routes") or []:
            hosts = [h for m in route.get("match") or [] for h in m.get("host") or []]
            for h in hosts:
                sites.setdefault(h, []).extend(_handlers([route]))
    return sites


def handlers_of(handlers: list[dict], kind: str) -> list[dict]:
    return [h for h in handlers if h.get("handler") == kind]


def upstreams(proxy: dict) -> list[str]:
    return [u.get("dial", "") for u in proxy.get("upstreams") or []]


def has_basic_auth(handlers: list[dict]) -> bool:
    return any("http_basic" in (h.get("providers") or {}) for h in handlers_of(handlers, "authentication"))


def basic_auth_users(handlers: list[dict]) -> list[str]:
    return [a.get("username", "") for h in handlers_of(handlers, "authentication")
            for a in ((h.get("providers") or {}).get("http_basic") or {}).get("accounts") or []]


def caddyfile_headers(text: str) -> tuple[dict, tuple]:
    """Response headers a Caddyfile's `header { ... }` blocks set, and the ones they remove:
    ({name: value}, (removed names,)). Understands `Name "value"`, `Name value`, `-Name`,
    and the `+`/`>` prefixes."""
    set_: dict[str, str] = {}
    removed: list[str] = []
    depth_in_header = None
    depth = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        opens, closes = line.count("{"), line.count("}")
        if depth_in_header is None and re.match(r"^header(\s+\S+)?\s*\{$", line):
            depth += 1
            depth_in_header = depth
            continue
        if depth_in_header is not None and depth == depth_in_header and line != "}":
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            if words:
                name = words[0]
                if name.startswith("-"):
                    removed.append(name[1:])
                elif len(words) >= 2:
                    set_[name.lstrip("+>")] = " ".join(words[1:])
        depth += opens - closes
        if depth_in_header is not None and depth < depth_in_header:
            depth_in_header = None
    return set_, tuple(dict.fromkeys(removed))


def psql_rows(text: str, sep: str = "\x1f") -> list[list[str]]:
    """psql -A -t -F SEP output -> rows of fields (blank lines dropped)."""
    return [line.split(sep) for line in text.splitlines() if line.strip()]


def pg_bool(value: str) -> bool:
    return value.strip() in ("t", "true", "on", "1")


@dataclass(frozen=True)
class LogHit:
    service: str
    container: str
    signature: str  # Signature.key
    line: str


def log_hits(output: str, signatures=SIGNATURES) -> list[LogHit]:
    """The output of `logs_script` -> one hit per (line, signature) it holds; one-off
    containers (migrations, `compose run`) are left out."""
    hits = []
    for head, block in marked_blocks(output, "container"):
        service, _, rest = head.partition("|")
        name, _, oneoff = rest.partition("|")
        if oneoff.strip().lower() == "true":
            continue
        for line in block.splitlines():
            _, _, text = line.partition(":")  # grep -n's "N:"
            for sig in signatures:
                if sig.text in text:
                    hits.append(LogHit(service, name.lstrip("/"), sig.key, text.strip()))
    return hits


@dataclass(frozen=True)
class Stat:
    mode: int
    user: str
    group: str
    kind: str
    path: str

    @property
    def octal(self) -> str:
        return f"{self.mode:04o}"


def stats(text: str) -> dict[str, Stat]:
    """`stat -c '%a|%U|%G|%F|%n'` lines -> {path: Stat} (error lines ignored)."""
    out = {}
    for line in text.splitlines():
        parts = line.split("|", 4)
        if len(parts) == 5 and re.fullmatch(r"[0-7]{1,4}", parts[0]):
            out[parts[4]] = Stat(int(parts[0], 8), parts[1], parts[2], parts[3], parts[4])
    return out


def sha256_lines(text: str) -> dict[str, str]:
    """`sha256sum` lines -> {path without ./: digest}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([0-9a-f]{64})\s+\*?(.+)$", line.strip())
        if m:
            path = m.group(2)
            out[path[2:] if path.startswith("./") else path] = m.group(1)
    return out


def secrets_in(text: str, secrets: dict, min_length: int = 8) -> list[str]:
    """Names of the secrets whose value (plain or URL-encoded) appears in `text`."""
    found = []
    for name, secret in sorted(secrets.items()):
        value = secret.reveal() if hasattr(secret, "reveal") else str(secret)
        if len(value) < min_length:
            continue
        if value in text or quote(value, safe="") in text:
            found.append(name)
    return found


def probe_events(lines) -> dict[str, dict]:
    """The probe's JSON lines -> {kind: last object of that kind}."""
    out = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "kind" in obj:
            out[obj["kind"]] = obj
    return out


def sse_lines(raw: bytes) -> list[str]:
    return [line.strip() for line in raw.decode(errors="replace").splitlines() if line.strip()]
