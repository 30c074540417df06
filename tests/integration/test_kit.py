"""The offline image kit, built for real: each image keeps the contract of the official image it
stands in for, and a second kit run skips everything in seconds."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import psycopg
import pytest

from opskit.images import local_images
from opskit.sim import kit, kit_plan

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

TIMES: dict[str, float] = {}


@pytest.fixture(scope="session")
def kit_built():
    """Every kit image, built now if missing (minutes from nothing, seconds when up to date)."""
    started = time.monotonic()
    kit.build_kit()
    TIMES["first run in this session"] = time.monotonic() - started
    return {image.name: image.tag for image in kit_plan.KIT}


@pytest.fixture
def docker_names():
    """Unique names for containers and volumes of one test; all removed afterwards."""
    made: list[tuple[str, str]] = []

    def name(kind: str = "container") -> str:
        value = f"opskit-kit-test-{uuid.uuid4().hex[:8]}"
        made.append((kind, value))
        return value

    yield name
    # containers first: a volume in use cannot be removed
    for kind, value in sorted(made, key=lambda item: item[0] != "container"):
        argv = ["docker", "rm", "-f", "-v", value] if kind == "container" else ["docker", "volume", "rm", "-f", value]
        subprocess.run(argv, capture_output=True)


def docker(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def wait_for(what: str, probe, seconds: float = 60, container: str | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.3)
    logs = ""
    if container:
        done = docker("logs", container, check=False)
        logs = done.stdout + done.stderr
    raise AssertionError(f"{what} not within {seconds}s\n{logs[-3000:]}")


def published_port(container: str, inside: str) -> int:
    out = docker("port", container, inside).stdout.split()[0]
    host, _, port = out.rpartition(":")
    assert host == "127.0.0.1", out
    return int(port)


# -- the kit itself ---------------------------------------------------------------------------------


def test_every_image_carries_the_digest_of_its_inputs(kit_built):
    mirror, security = kit.mirrors()
    wanted = kit_plan.digests(kit.gather_facts(), mirror, security)
    have = local_images(list(kit_built.values()))
    for name, tag in kit_built.items():
        assert have[tag].labels.get(kit_plan.LABEL) == wanted[name], tag


def test_a_second_run_skips_everything_in_seconds(kit_built, capsys):
    started = time.monotonic()
    kit.build_kit()
    seconds = time.monotonic() - started
    mirror, security = kit.mirrors()
    assert len(kit_plan.plan_kit(kit.gather_facts(), mirror=mirror, security_mirror=security)) == 0
    assert seconds < 15
    with capsys.disabled():
        print(f"\n[kit] {', '.join(f'{k}: {v:.1f}s' for k, v in TIMES.items())}; second run: {seconds:.1f}s")


# -- postgres -------------------------------------------------------------------------------------------

INIT_SH = """#!/bin/sh
# runs as postgres against the socket-only temporary server, as the official image does
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \\
  -c "CREATE TABLE boot (run text, who text DEFAULT current_user)" \\
  -c "INSERT INTO boot (run) VALUES ('$MARKER')"
"""
INIT_SQL = "INSERT INTO boot (run) VALUES ('sql file');\n"


def start_postgres(name, volume, init_dir, marker, password="s3cret-pw"):
    docker("run", "-d", "--name", name, "-e", "POSTGRES_USER=app_admin", "-e", f"POSTGRES_PASSWORD={password}",
           "-e", "POSTGRES_DB=app", "-e", f"MARKER={marker}", "-v", f"{volume}:/var/lib/postgresql/data",
           "-v", f"{init_dir}:/docker-entrypoint-initdb.d:ro", "-p", "127.0.0.1::5432", "opskit/postgres:15")
    # over TCP, as the compose healthcheck asks: the socket-only first-boot server does not count
    wait_for("pg_isready over TCP", lambda: docker("exec", name, "pg_isready", "--host", "127.0.0.1", "--username",
                                                  "app_admin", "--dbname", "app", check=False).returncode == 0,
             container=name)
    return published_port(name, "5432/tcp")


def rows(port, password="s3cret-pw"):
    with psycopg.connect(host="127.0.0.1", port=port, user="app_admin", password=password, dbname="app",
                         connect_timeout=10) as conn:
        return conn.execute("SELECT run, who FROM boot ORDER BY run").fetchall()


def test_postgres_honours_the_official_contract_and_inits_an_empty_volume_only(kit_built, docker_names, tmp_path):
    init = tmp_path / "initdb.d"
    init.mkdir()
    (init / "10-table.sh").write_text(INIT_SH)
    (init / "10-table.sh").chmod(0o755)
    (init / "20-data.sql").write_text(INIT_SQL)
    (init / "30-ignored.txt").write_text("not a script\n")
    init.chmod(0o755)
    volume = docker_names("volume")

    first = docker_names()
    port = start_postgres(first, volume, init, "first")
    assert rows(port) == [("first", "app_admin"), ("sql file", "app_admin")]
    # scram over TCP from outside the container: a wrong password is refused
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        rows(port, password="wrong")
    hba = docker("exec", first, "cat", "/var/lib/postgresql/data/pg_hba.conf").stdout
    assert "host all all all scram-sha-256" in hba
    # postgres itself is PID 1 (signals reach it) and runs as the postgres user
    assert docker("exec", first, "cat", "/proc/1/comm").stdout.strip() == "postgres"
    assert docker("exec", first, "stat", "-c", "%U", "/proc/1").stdout.strip() == "postgres"
    docker("stop", first)
    stopped = docker("logs", first)
    assert "database system is shut down" in stopped.stdout + stopped.stderr

    # the same volume again: no init scripts, the data is there
    second = docker_names()
    port = start_postgres(second, volume, init, "second")
    assert rows(port) == [("first", "app_admin"), ("sql file", "app_admin")]
    logs = docker("logs", second).stdout
    assert "initialised already" in logs and "running /docker-entrypoint-initdb.d" not in logs


def test_postgres_refuses_an_empty_volume_without_a_password(kit_built):
    done = docker("run", "--rm", "opskit/postgres:15", check=False)
    assert done.returncode != 0
    assert "POSTGRES_PASSWORD is not set" in done.stderr


def test_postgres_tools_are_on_the_path(kit_built):
    out = docker("run", "--rm", "--entrypoint", "sh", "opskit/postgres:15", "-c",
                 "for t in pg_isready psql postgres; do command -v $t; $t --version; done").stdout.splitlines()
    assert out[0::2] == [f"/usr/lib/postgresql/15/bin/{t}" for t in ("pg_isready", "psql", "postgres")]
    assert all("(PostgreSQL) 15." in line for line in out[1::2])


# -- redis ------------------------------------------------------------------------------------------


def test_redis_as_compose_runs_it_refuses_commands_without_the_password(kit_built, docker_names):
    name, volume = docker_names(), docker_names("volume")
    docker("run", "-d", "--name", name, "--user", "redis", "-e", "REDIS_PASSWORD=r3dis-pw", "-v", f"{volume}:/data",
           "opskit/redis:7", "sh", "-c", 'exec redis-server --requirepass "$REDIS_PASSWORD" --appendonly yes')
    wait_for("redis answering", lambda: "NOAUTH" in docker("exec", name, "redis-cli", "ping", check=False).stdout,
             container=name)
    assert "NOAUTH" in docker("exec", name, "redis-cli", "ping", check=False).stdout
    assert "NOAUTH" in docker("exec", name, "redis-cli", "set", "k", "v", check=False).stdout
    assert docker("exec", "-e", "REDISCLI_AUTH=r3dis-pw", name, "redis-cli", "ping").stdout.strip() == "PONG"
    assert docker("exec", "-e", "REDISCLI_AUTH=r3dis-pw", name, "redis-cli", "set", "k", "v").stdout.strip() == "OK"
    # the redis user writes its append-only file to the volume
    assert "appendonly" in docker("exec", name, "ls", "/data").stdout
    version = docker("exec", name, "redis-server", "--version").stdout
    assert "v=7." in version


def test_redis_image_defaults(kit_built):
    config = json.loads(docker("image", "inspect", "opskit/redis:7").stdout)[0]["Config"]
    assert config["User"] == "redis" and config["WorkingDir"] == "/data"
    assert "/data" in config["Volumes"]
    assert config["Cmd"] == ["redis-server", "--protected-mode", "no"]


# -- caddy ------------------------------------------------------------------------------------------

CADDYFILE = """{
	admin localhost:2019
}

:8080 {
	basic_auth /flower/* {
		admin %s
	}
	reverse_proxy 127.0.0.1:9000 {
		flush_interval -1
		transport http {
			read_timeout 600s
		}
	}
}
"""


def test_caddy_is_production_s_2_11_line(kit_built):
    assert docker("run", "--rm", "opskit/caddy:2", "caddy", "version").stdout.startswith("v2.11.")


def test_caddy_validates_basic_auth_and_a_transport_read_timeout(kit_built, tmp_path):
    hashed = docker("run", "--rm", "opskit/caddy:2", "caddy", "hash-password", "--plaintext", "flower-pw").stdout.strip()
    folder = tmp_path / "caddy"
    folder.mkdir()
    (folder / "Caddyfile").write_text(CADDYFILE % hashed)
    folder.chmod(0o755)
    (folder / "Caddyfile").chmod(0o644)
    done = docker("run", "--rm", "-v", f"{folder}:/etc/caddy:ro", "opskit/caddy:2",
                  "caddy", "validate", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile", check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Valid configuration" in done.stdout + done.stderr


def test_caddy_runs_with_the_official_layout_and_the_compose_healthcheck_passes(kit_built, docker_names):
    config = json.loads(docker("image", "inspect", "opskit/caddy:2").stdout)[0]["Config"]
    assert {"XDG_CONFIG_HOME=/config", "XDG_DATA_HOME=/data"} <= set(config["Env"])
    assert set(config["Volumes"]) == {"/config", "/data"}
    assert set(config["ExposedPorts"]) == {"80/tcp", "443/tcp", "443/udp", "2019/tcp"}
    assert config["WorkingDir"] == "/srv"
    assert config["Cmd"] == ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
    name = docker_names()
    docker("run", "-d", "--name", name, "opskit/caddy:2")
    health = ["exec", name, "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:2019/config/"]
    wait_for("the caddy healthcheck", lambda: docker(*health, check=False).returncode == 0, container=name)


# -- python and node ------------------------------------------------------------------------------------


def test_python_makes_a_working_venv(kit_built):
    out = docker("run", "--rm", "opskit/python:3.11", "sh", "-c",
                 "python3 -m venv /opt/venv && /opt/venv/bin/pip --version && "
                 "/opt/venv/bin/python -c 'import ssl, sys; print(sys.version_info[:2])' && python --version").stdout
    assert "(3, 11)" in out and "pip " in out and "Python 3.11" in out


def test_node_runs_and_has_npm(kit_built):
    out = docker("run", "--rm", "opskit/node:18", "sh", "-c",
                 "node -e 'console.log(process.versions.node)' && npm --version").stdout.split()
    assert out[0].startswith("18.") and out[1][0].isdigit()
