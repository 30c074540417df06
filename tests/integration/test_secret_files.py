"""Secrets reach the containers as files, and nowhere else: a real stack (Postgres, Redis, the API
and the frontend from the image kit and the sample app) started by real Compose from a
rendered release, with secrets full of the characters every layer treats specially.

Proved here: each service reads its own files (it becomes healthy, the API checks the key it read,
Redis wants the password its config file set) and finds no other service's; no secret value is in
`docker inspect` of any container, in a container's config on disk, in the compose file, or in the
argv of any process of the stack. The files reach the containers through the deploy's own install
step (`deploy.install_config`), run here on this machine.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import secrets as random
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from opskit import ROOT, deploy, inventory, release_folder, render
from opskit.inventory import SECRET_NAMES
from opskit.layout import Layout, compose_argv
from tests.smoke import secret_scan

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_compose", "kit_images")]

PROJECT = "trackc-secrets"
# the worker is left out: it reads its files with the API's code (app/settings.py), and its
# Celery healthcheck is the slowest to turn healthy on a loaded machine
SERVICES = ("postgres", "redis", "api", "frontend")
# valid secrets (no control characters) holding what shells, URLs, YAML, Compose and Redis's
# config parser treat specially; a random head keeps each unique, so a match means a leak
TRICKY = {
    "postgres_superuser_password": "s'u\"p$er\\",
    "postgres_admin_password": "a:d@m/i%n#?&",
    "postgres_ui_password": "u i$HOME${X}é",
    "redis_password": 'r"e d\\is #$1 é😀',
    "api_key": "k$(id)`x`;|",
    "app_secret_key": "{{secret}}",
    "better_auth_secret": "b'a\\\"",
    "flower_password": "fl0wer",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv, timeout=600, check=True, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    # stderr/stdout of compose and docker hold no secret (that is what this module proves)
    assert not check or done.returncode == 0, f"{argv[:6]} exited {done.returncode}: {done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The release rendered, installed as a deploy installs it, its images built, and the
    services up and healthy; everything removed afterwards."""
    work = tmp_path_factory.mktemp("trackc")
    remote = work / "srv"
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    node = raw["environments"]["production"]
    node.update(project=PROJECT, remote_dir=str(remote),
                images={"postgres": "opskit/postgres:15", "redis": "opskit/redis:7", "caddy": "opskit/caddy:2"},
                builds={"api": {"args": {"PYTHON_IMAGE": "opskit/python:3.11"}},
                        "frontend": {"args": {"NODE_IMAGE": "opskit/node:18"}}})
    node["postgres"] = {"publish": f"127.0.0.1:{_free_port()}"}
    values = {name: random.token_urlsafe(9) + TRICKY[name] for name in SECRET_NAMES}
    environ = {f"OPSKIT_{name.upper()}": value for name, value in values.items()}
    env = inventory.parse(copy.deepcopy(raw), "production", base=ROOT, environ=environ)
    release = render.render(env)
    layout = Layout(str(remote))
    folder = Path(layout.release(release.id))
    release_folder.write(release, folder)
    install = deploy.install_config(layout, release.id)
    _run(list(install.argv))

    built = []
    for name, build in sorted(env.builds.items()):
        image = release.builds[name]["image"]
        args = [a for k, v in build.args for a in ("--build-arg", f"{k}={v}")]
        _run(["docker", "build", "-q", "-t", image, *args, "-f", str(build.context / build.dockerfile),
              str(build.context)], timeout=1800)
        built.append(image)

    def compose(*args, **kw):
        return _run(compose_argv(str(folder), *args), **kw)

    try:
        compose("up", "-d", "--wait", "--wait-timeout", "240", "postgres", "redis", timeout=300)
        compose("run", "--rm", "--no-deps", "-T", "api", "alembic", "upgrade", "head", timeout=300)
        compose("up", "-d", "--wait", "--wait-timeout", "240", *SERVICES, timeout=300)
        yield {"env": env, "release": release, "folder": folder, "layout": layout, "values": values,
               "compose": compose}
    finally:
        compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
        _run(["docker", "image", "rm", "-f", *built], check=False)


def forms(value: str) -> set[str]:
    """A secret as a leak may show it: itself, URL-encoded, JSON-escaped, base64 (basic auth)."""
    return {value, quote(value, safe=""), quote(value), json.dumps(value)[1:-1],
            json.dumps(value, ensure_ascii=False)[1:-1], base64.b64encode(value.encode()).decode()}


def _leaks(text: str, values: dict) -> list[str]:
    """Names (never values) of the secrets found in `text` in any of their forms."""
    return sorted(name for name, value in values.items() if any(f in text for f in forms(value)))


def containers(stack) -> dict[str, str]:
    done = _run(["docker", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                 "--format", '{{.Label "com.docker.compose.service"}} {{.ID}}'])
    return dict(line.split() for line in done.stdout.splitlines())


def in_container(stack, service: str, script: str, check=True) -> subprocess.CompletedProcess:
    return _run(["docker", "exec", containers(stack)[service], "sh", "-c", script], check=check, timeout=60)


# -- each service reads its own files, and no other's -------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_finds_exactly_its_own_secret_files_and_reads_them(stack, service):
    listed = in_container(stack, service, "ls /run/secrets").stdout.split()
    assert sorted(listed) == sorted(render.SERVICE_SECRETS[service])
    # read as the container's own user; only digests come back
    sums = in_container(stack, service, "cd /run/secrets && sha256sum *").stdout.split("\n")
    got = {line.split()[1]: line.split()[0] for line in sums if line.strip()}
    release = stack["release"]
    assert got == {n: hashlib.sha256(release.files[f"secrets/{n}"].content).hexdigest() for n in listed}


def test_no_service_finds_another_services_secret(stack):
    assert "redis_password" not in in_container(stack, "frontend", "ls /run/secrets").stdout
    assert in_container(stack, "frontend", "test -e /run/secrets/redis_url", check=False).returncode != 0
    assert in_container(stack, "redis", "test -e /run/secrets/api_key", check=False).returncode != 0


def test_the_secret_files_are_read_only_in_the_container(stack):
    done = in_container(stack, "api", "echo x > /run/secrets/api_key", check=False)
    assert done.returncode != 0


def test_redis_wants_the_password_its_config_file_set(stack):
    plain = in_container(stack, "redis", "redis-cli ping", check=False).stdout
    assert "NOAUTH" in plain
    authed = in_container(stack, "redis", 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" '
                                          "redis-cli --no-auth-warning ping").stdout
    assert authed.strip() == "PONG"


def test_the_api_checks_the_key_it_read_from_its_file(stack):
    probe = ("import urllib.request as u, urllib.error as e, sys\n"
             "key = open('/run/secrets/api_key', encoding='utf-8').read()\n"
             "def get(h):\n"
             "    try: return u.urlopen(u.Request('http://127.0.0.1:8000/runs/00000000-0000-0000-0000-000000000000',"
             " headers=h), timeout=5).status\n"
             "    except e.HTTPError as x: return x.code\n"
             "print(get({}), get({'X-API-Key': 'wrong'}), get({'X-API-Key': key}))\n")
    codes = _run(["docker", "exec", containers(stack)["api"], "python", "-c", probe], timeout=60).stdout.split()
    assert codes[:2] == ["401", "401"] and codes[2] in ("200", "404"), codes


# -- and nowhere else ---------------------------------------------------------------------------------


def test_no_secret_in_docker_inspect_of_any_container(stack):
    ids = list(containers(stack).values())
    assert len(ids) == len(SERVICES)
    inspected = _run(["docker", "inspect", *ids]).stdout
    assert not _leaks(inspected, stack["values"])
    was_env = {"POSTGRES_PASSWORD", "POSTGRES_UI_PASSWORD", "REDIS_PASSWORD", "DATABASE_URL", "REDIS_URL",
               "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "API_KEY", "APP_SECRET_KEY", "BETTER_AUTH_SECRET"}
    for c in json.loads(inspected):
        assert not {e.split("=", 1)[0] for e in c["Config"]["Env"]} & was_env, c["Name"]


def test_no_secret_in_a_container_config_on_disk(stack):
    root = Path(_run(["docker", "info", "--format", "{{.DockerRootDir}}"]).stdout.strip())
    read = 0
    for cid in containers(stack).values():
        full = _run(["docker", "inspect", "--format", "{{.Id}}", cid]).stdout.strip()
        for name in ("config.v2.json", "hostconfig.json"):
            path = root / "containers" / full / name
            if not os.access(path, os.R_OK):
                continue  # an engine in another mount namespace (rootless, remote): inspect covers it
            read += 1
            assert not _leaks(path.read_text(errors="replace"), stack["values"]), (cid, name)
    assert read or not (root / "containers").exists()


def test_no_secret_in_the_rendered_compose_file_nor_outside_the_secret_files(stack):
    release = stack["release"]
    for path, f in release.files.items():
        if not path.startswith("secrets/"):
            assert not _leaks(f.content.decode(errors="replace"), stack["values"]), path


def test_no_secret_in_the_argv_of_any_process_of_the_stack(stack):
    found = []
    for cid in containers(stack).values():
        pids = _run(["docker", "top", cid, "-eo", "pid"]).stdout.split()[1:]
        for pid in pids:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone already
            found += _leaks(argv, stack["values"])
    assert not found


def test_the_installed_secret_files_are_0444_in_a_folder_only_the_deploy_user_enters(stack):
    shared = Path(stack["layout"].secrets)
    assert oct(shared.stat().st_mode)[-3:] == "700"
    assert sorted(p.name for p in shared.iterdir()) == sorted(
        {n for names in render.SERVICE_SECRETS.values() for n in names})
    assert {oct(p.stat().st_mode)[-3:] for p in shared.iterdir()} == {"444"}
    assert oct((stack["folder"] / "secrets").stat().st_mode)[-3:] == "700"


def test_a_rotated_secret_is_installed_by_rename_so_running_containers_keep_theirs(stack, tmp_path):
    """The install step renames a new file over the old: the running API still reads the value
    it mounted until Compose recreates it (its secrets label changed)."""
    layout, release = stack["layout"], stack["release"]
    copy_id = release.id + "-rotated"
    rotated = Path(layout.release(copy_id))
    subprocess.run(["cp", "-a", str(stack["folder"]), str(rotated)], check=True)
    key = rotated / "secrets" / "api_key"
    key.chmod(0o644)
    key.write_text("rotated-" + random.token_hex(8))
    key.chmod(0o444)
    before = in_container(stack, "api", "sha256sum /run/secrets/api_key").stdout.split()[0]
    try:
        _run(list(deploy.install_config(layout, copy_id).argv))
        assert hashlib.sha256(Path(layout.secrets, "api_key").read_bytes()).hexdigest() != before
        assert in_container(stack, "api", "sha256sum /run/secrets/api_key").stdout.split()[0] == before
    finally:
        _run(list(deploy.install_config(layout, release.id).argv))


def test_no_secret_in_the_logs_of_the_stack(stack):
    logs = stack["compose"]("logs", "--no-color", "--timestamps").stdout
    assert "Uvicorn running" in logs or "Application startup complete" in logs  # the API's log was read
    assert not _leaks(logs, stack["values"])


# -- the smoke suite's scan (tests/smoke/secret_scan.py), run here on this stack ------------------------


class Local:
    """`Remote.run` on this machine: the scan's server script runs with this machine's python3
    against this engine, as it runs on a server over SSH."""

    def run(self, argv, stdin=None, timeout=60):
        return subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)


def test_the_smoke_scan_finds_no_secret_anywhere_in_the_stack(stack):
    result = secret_scan.scan(Local(), stack["env"], [
        secret_scan.logs(PROJECT), secret_scan.inspect(PROJECT), secret_scan.processes(),
        secret_scan.files([str(stack["folder"])], skip=["secrets"])])
    assert not result.hits and not result.unreadable
    assert result.counts["sources"] >= 2 * len(SERVICES) + 1 and result.counts["bytes"] > 0


def test_the_smoke_scan_names_a_secret_that_a_container_logs(stack):
    """What the e2e catch does on the server (`cat /run/secrets/api_key > /proc/1/fd/1` in the
    API), on a one-off container of the project, so the stack's own log stays clean."""
    name = f"{PROJECT}-leak-{random.token_hex(3)}"
    stack["compose"]("run", "-d", "--no-deps", "--name", name, "api", "sleep", "60")
    try:
        # the API's own user, under the service's confinement, writes to its PID 1's stdout
        # (the newline ends the line: Docker's log copier holds a partial one back)
        _run(["docker", "exec", name, "sh", "-c", "{ cat /run/secrets/api_key; echo; } > /proc/1/fd/1"])
        for _ in range(50):
            if _run(["docker", "logs", name], check=False).stdout.strip():
                break
            time.sleep(0.2)
        result = secret_scan.scan(Local(), stack["env"], [secret_scan.logs(PROJECT)])
        assert {(h.service, h.container, h.secret, h.form) for h in result.hits} == {("api", name, "api_key", "plain")}
    finally:
        _run(["docker", "rm", "-f", name], check=False)


def test_the_smoke_scan_names_a_secret_in_a_container_environment(stack, tmp_path):
    env_file = tmp_path / "leak.env"
    env_file.write_text(f"LEAKED={stack['values']['redis_password']}\n")
    env_file.chmod(0o600)
    name = f"{PROJECT}-env-{random.token_hex(3)}"
    _run(["docker", "run", "-d", "--name", name, "--env-file", str(env_file),
          "--label", f"com.docker.compose.project={PROJECT}", "--label", "com.docker.compose.service=leaky",
          "opskit/redis:7", "sleep", "60"])
    try:
        result = secret_scan.scan(Local(), stack["env"], [secret_scan.inspect(PROJECT)])
        assert {(h.service, h.secret) for h in result.hits} == {("leaky", "redis_password")}
    finally:
        _run(["docker", "rm", "-f", name], check=False)


def test_the_smoke_scan_names_a_secret_in_a_process_argv(stack):
    """A process that carries a password in its argv, as `redis-server --requirepass` did."""
    name = f"{PROJECT}-argv-{random.token_hex(3)}"
    stack["compose"]("run", "-d", "--no-deps", "--name", name, "redis", "sleep", "60")
    try:
        _run(["docker", "exec", "-d", name, "sh", "-c",
              'exec sh -c "sleep 60; true" "$(cat /run/secrets/redis_password)"'])
        for _ in range(50):
            result = secret_scan.scan(Local(), stack["env"], [secret_scan.processes()])
            if result.hits:
                break
            time.sleep(0.2)
        assert {(h.where, h.secret) for h in result.hits} == {("process list", "redis_password")}
    finally:
        _run(["docker", "rm", "-f", name], check=False)
