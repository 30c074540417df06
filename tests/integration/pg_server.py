"""A throw-away PostgreSQL cluster for integration tests: Debian's server binaries on loopback.

Shaped like the official image's first boot: the superuser role `postgres` is the bootstrap
superuser (POSTGRES_USER) with a password, local socket connections are trusted (how `docker
compose exec postgres psql` gets in), TCP needs SCRAM; the admin role is made by roles.psql. One
cluster serves the whole session (from whichever test module asks first); each test makes its
own database and UI role names, since roles are cluster-wide. `old_pg_server` is a cluster made
the way releases before the superuser role made it (the admin role as POSTGRES_USER), for the
upgrade's tests.

`pg_server` is the fixture; import it into a test module. It fails, saying how to get them, when
no server binaries are found (`scripts/setup-test-deps.sh` installs them; CI runs it): a test that
needs Postgres never skips.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SUPERUSER_ROLE = "postgres"  # the inventory's default superuser role: the cluster's bootstrap superuser
SUPERUSER_PASSWORD = "test-postgres_superuser_password-value"  # what pg_env's secrets give
ADMIN_ROLE = "job_agent_admin"  # the inventory's default admin role (the bootstrap superuser of old volumes)
ADMIN_PASSWORD = "test-postgres_admin_password-value"  # what tests/conftest.py's secrets_env gives
SETUP_HINT = "run `sudo bash scripts/setup-test-deps.sh` (Debian) to install PostgreSQL's server binaries"


def find_bindir() -> Path | None:
    """$OPSKIT_TEST_PG_BINDIR (to try another version), else the newest /usr/lib/postgresql/N/bin
    with initdb and postgres, else `pg_config --bindir`."""
    if os.environ.get("OPSKIT_TEST_PG_BINDIR"):
        return Path(os.environ["OPSKIT_TEST_PG_BINDIR"])
    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(found.stdout.strip())
    for folder in candidates:
        if all(os.access(os.path.join(folder, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres", "psql")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    bindir: Path
    root: Path
    port: int
    as_user: list = field(default_factory=list)  # `runuser -u postgres --` when we are root
    superuser: str = SUPERUSER_ROLE  # initdb's --username: the bootstrap superuser, psql's default user
    superuser_password: str = SUPERUSER_PASSWORD
    admin: str = ADMIN_ROLE  # alembic's user (over TCP, its password)
    admin_password: str = ADMIN_PASSWORD

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> str:
        return str(self.root)

    @property
    def version(self) -> int:
        return int(self.psql_value("SHOW server_version_num")) // 10000

    def _server_cmd(self, *argv, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run([*self.as_user, *map(str, argv)], capture_output=True, text=True, **kwargs)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, argv))} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def start(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.superuser_password + "\n")
        self._chown(pwfile)
        try:
            self._server_cmd(self.bindir / "initdb", "--pgdata", self.datadir, "--username", self.superuser,
                             "--pwfile", pwfile, "--auth-local", "trust", "--auth-host", "scram-sha-256",
                             "--encoding", "UTF8", "--locale", "C", "--no-instructions")
        finally:
            pwfile.unlink()
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.socket_dir} "
                   "-c fsync=off -c full_page_writes=off -c max_connections=40")
        self._server_cmd(self.bindir / "pg_ctl", "--pgdata", self.datadir, "--log", self.root / "server.log",
                         "--options", options, "--wait", "--timeout", "60", "start")

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "--pgdata", str(self.datadir),
                        "--mode", "immediate", "--wait", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def _chown(self, path: Path) -> None:
        if self.as_user:
            user = pwd.getpwnam(self.as_user[2])
            os.chown(path, user.pw_uid, user.pw_gid)

    # -- clients (as root is fine: only the server refuses root) --------------------------------

    def env(self, **extra) -> dict:
        """Environment for psql over the Unix socket (trusted, as inside the container)."""
        return {**os.environ, "PGHOST": self.socket_dir, "PGPORT": str(self.port), "PGCLIENTENCODING": "UTF8",
                **extra}

    def psql(self, sql: str | None = None, *, argv=None, stdin: str | None = None, dbname: str = "postgres",
             check: bool = True, env=None, user: str | None = None) -> subprocess.CompletedProcess:
        """Run psql as the superuser (or `user`): `sql` with -c, or `argv` (full psql options) fed with `stdin`."""
        if argv is None:
            argv = ["--no-psqlrc", "--set", "ON_ERROR_STOP=1", "--tuples-only", "--no-align",
                    "--username", user or self.superuser, "--dbname", dbname, "--command", sql]
        done = subprocess.run([str(self.bindir / "psql"), *argv], input=stdin, capture_output=True, text=True,
                              env=env or self.env(), timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"psql failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def psql_value(self, sql: str, dbname: str = "postgres", user: str | None = None) -> str:
        return self.psql(sql, dbname=dbname, user=user).stdout.strip()

    def run(self, argv, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Any command (`db.psql_argv`: `sh -c` with psql) as it runs in the container: this
        cluster's psql first on PATH, its socket in PGHOST."""
        env = self.env(PATH=f"{self.bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, env=env, timeout=120)

    def create_database(self, name: str) -> str:
        """A new database owned by the bootstrap superuser, as POSTGRES_DB on a first boot."""
        ident = '"' + name.replace('"', '""') + '"'
        self.psql(f"CREATE DATABASE {ident}")
        return name

    def connect(self, user: str, password: str, dbname: str, **kwargs):
        """A psycopg connection over TCP on loopback: password authentication, SCRAM."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=user, password=password, dbname=dbname,
                               connect_timeout=10, **kwargs)

    def url(self, user: str, password: str, dbname: str, driver: str = "postgresql+psycopg") -> str:
        from urllib.parse import quote

        return f"{driver}://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"


_shared: dict = {}


def _server_user() -> list:
    """Postgres refuses to run as root: run the server as `postgres` (or `nobody`) then."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    pytest.fail("running as root and neither a `postgres` nor a `nobody` user exists to run the server "
                "(create one: `useradd --system postgres`)", pytrace=False)


def start_cluster(**kwargs) -> PgServer:
    """A new running cluster (`PgServer` fields in kwargs: `superuser=` is initdb's user)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail(f"no PostgreSQL server binaries found under /usr/lib/postgresql/*/bin or via pg_config: "
                    f"{SETUP_HINT}", pytrace=False)
    as_user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="opskit-pg-"))
    server = PgServer(bindir, root, _free_port(), as_user, **kwargs)
    server._chown(root)
    root.chmod(0o755)
    try:
        server.start()
    except Exception:
        log = root / "server.log"
        detail = log.read_text()[-3000:] if log.exists() else ""
        server.stop()
        raise RuntimeError(f"could not start a PostgreSQL cluster from {bindir}\n{detail}") from None
    return server


@pytest.fixture
def old_pg_server():
    """A cluster as releases before the superuser role made it: the admin role is POSTGRES_USER,
    the bootstrap superuser, with the admin's password. Its own, for one test (the upgrade
    renames roles cluster-wide), stopped and removed after it."""
    server = start_cluster(superuser=ADMIN_ROLE, superuser_password=ADMIN_PASSWORD)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_server(request) -> PgServer:
    """One running cluster for the session, stopped and removed when the session ends."""
    if "server" in _shared:
        return _shared["server"]
    server = start_cluster()
    _shared["server"] = server
    # whichever module started it, it stops once, at the very end of the session
    request.config.add_cleanup(lambda: (server.stop(), _shared.clear()))
    return server


# -- the sample app's Alembic, run as the deploy runs it (as the admin role, DATABASE_URL) --------

API_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "app" / "api"


def alembic(server: PgServer, database: str, *args, cwd: Path = API_DIR) -> subprocess.CompletedProcess:
    """`alembic ARGS` from the API folder (its alembic.ini, migrations/), output in `.output`."""
    import sys

    env = {**os.environ, "DATABASE_URL": server.url(server.admin, server.admin_password, database)}
    done = subprocess.run([sys.executable, "-m", "alembic", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    done.output = done.stdout + done.stderr
    return done


# -- an inventory environment pointed at this cluster ---------------------------------------------


def pg_env(database: str, ui_role: str, ui_password: str = "ui-secret-1", **postgres):
    """The real inventory's production environment, with its Postgres names, limits and the UI
    secret changed (the superuser and admin secrets stay: the clusters' bootstrap passwords)."""
    from dataclasses import replace

    import yaml

    from opskit import ROOT, inventory
    from opskit.secrets import Secret
    from opskit.inventory import SECRET_NAMES

    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    environ = {f"OPSKIT_{name.upper()}": f"test-{name}-value" for name in SECRET_NAMES}
    env = inventory.parse(raw, "production", base=ROOT, environ=environ)
    assert env.secrets["postgres_admin_password"].reveal() == ADMIN_PASSWORD
    assert env.secrets["postgres_superuser_password"].reveal() == SUPERUSER_PASSWORD
    secrets = {**env.secrets, "postgres_ui_password": Secret(ui_password, "postgres_ui_password")}
    return replace(env, postgres=replace(env.postgres, database=database, ui_role=ui_role, **postgres),
                   secrets=secrets)


def apply_roles(server: PgServer, env, folder: Path) -> subprocess.CompletedProcess:
    """What `invoke db.roles` does on the server: `db.psql_argv` (psql as the superuser role, or
    the admin role on an old volume) over the local socket, fed the `\\set` lines of
    `db.roles_input` and `\\i` of the rendered roles.psql."""
    from opskit import db
    from opskit.postgres import roles_script

    script = folder / "roles.psql"
    script.write_text(roles_script(env.postgres))
    return server.run(db.psql_argv(env.postgres), stdin=db.roles_input(env, script=str(script)).reveal())
