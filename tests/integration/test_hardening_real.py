"""The hardened stack on the real engine: the rendered compose file of `local` (kit images, the
sample app built from its Dockerfiles) brought up as project `trackd-*`, every service healthy with
a read-only root, no capability beyond its documented ones, a non-root user and a PIDs limit,
and, probed from inside each container's network namespace, reaching exactly what it must.

Published ports are moved to free loopback ports (the simulated VPS holds 80/443 here); the rest
is the file a deploy ships. Everything made is removed afterwards (`compose down -v`, image tags).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from opskit import ROOT, hardening, inventory, release_folder, render
from opskit.layout import Layout
from opskit.runner import Runner
from opskit.sim.secrets import plan_secrets
from opskit.ssh import Completed

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP_IMAGE = "trackd-api:test"
WEB_IMAGE = "trackd-frontend:test"
UP_TIMEOUT = 300

#: CapEff of PID 1 (hex bit mask): nothing, but Caddy's file capability NET_BIND_SERVICE (bit 10)
EFFECTIVE_CAPS = {"caddy": 1 << 10}


def run(argv, cwd=None, timeout=120, check=True, stdin=None):
    done = subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=stdin)
    if check:
        assert done.returncode == 0, f"{' '.join(argv[:6])}... exited {done.returncode}: {done.stderr[-3000:]}"
    return done


def build(context: Path, tag: str, args: dict):
    argv = ["docker", "build", "-q", "-t", tag, *[f"--build-arg={k}={v}" for k, v in args.items()], str(context)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=900, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert done.returncode == 0, done.stderr[-3000:]


def rendered_release(folder: Path):
    """The `local` environment's release with its server folders under `folder`, as a deploy
    leaves them (shared Caddyfile, init scripts and secrets beside the release)."""
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    for name in ("api", "frontend"):
        raw["defaults"]["builds"][name]["context"] = str(ROOT / raw["defaults"]["builds"][name]["context"])
    raw["defaults"]["remote_dir"] = str(folder / "srv")
    raw["environments"]["local"]["secrets_file"] = str(folder / "secrets.yaml")
    Runner().run(plan_secrets(inventory.parse(raw, "local", base=folder, with_secrets=False)))
    env = inventory.parse(raw, "local", base=folder)
    release = release_folder.write(render.render(env), folder / "srv" / "release")
    shared = Layout(env.remote_dir).shared()
    shutil.copytree(release / "postgres-init", shared["postgres_init"], dirs_exist_ok=True)
    Path(shared["caddy"]).mkdir(parents=True, exist_ok=True)
    shutil.copy(release / "Caddyfile", Path(shared["caddy"]) / "Caddyfile")
    # with their modes (files 0444 in a 0700 folder): each service's user reads its own files
    shutil.copytree(release / "secrets", shared["secrets"], dirs_exist_ok=True)
    return env, release


@pytest.fixture(scope="module")
def stack(tmp_path_factory, kit_images, docker_compose):
    folder = tmp_path_factory.mktemp("trackd")
    project = f"trackd-{uuid.uuid4().hex[:8]}"
    build(ROOT / "tests/fixtures/app/api", APP_IMAGE, {"PYTHON_IMAGE": "opskit/python:3.11"})
    build(ROOT / "tests/fixtures/app/frontend", WEB_IMAGE, {"NODE_IMAGE": "opskit/node:18"})
    env, release = rendered_release(folder)
    images = {name: APP_IMAGE for name in ("api", "worker", "beat", "flower")} | {"frontend": WEB_IMAGE}
    override = {"services": {
        **{name: {"image": image} for name, image in images.items()},
        "caddy": {"ports": ["127.0.0.1::80", "127.0.0.1::443"]},
        "postgres": {"ports": ["127.0.0.1::5432"]},
    }}
    # beat's 0.25 CPU (inventory resources) makes its healthcheck's imports take about 4 s of wall
    # time; on a loaded test machine that crosses the 5 s healthcheck timeout, which is not what
    # this test is about
    override["services"]["beat"]["cpus"] = 1.0
    # `!override`: replace the published ports instead of adding to them (Compose >= 2.24)
    text = yaml.safe_dump(override).replace("ports:\n", "ports: !override\n")
    (release / "trackd.override.yml").write_text(text)
    compose = ["docker", "compose", "-p", project, "-f", "docker-compose.yml", "-f", "trackd.override.yml"]
    try:
        run([*compose, "up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT), "postgres", "redis"], release,
            timeout=UP_TIMEOUT + 60)
        run([*compose, "run", "--rm", "--no-deps", "-T", "api", "alembic", "upgrade", "head"], release)
        up = run([*compose, "up", "-d", "--wait", "--wait-timeout", str(UP_TIMEOUT)], release,
                 timeout=UP_TIMEOUT + 60, check=False)
        ids = run([*compose, "ps", "-aq"], release).stdout.split()
        inspect = run(["docker", "inspect", *ids]).stdout if ids else "[]"
        yield {"env": env, "project": project, "release": release, "compose": compose, "up": up,
               "inspect": json.loads(inspect), "confined": hardening.parse_confined(inspect)}
    finally:
        logs = run([*compose, "logs", "--tail", "30"], release, check=False).stdout
        run([*compose, "down", "-v", "--remove-orphans", "--timeout", "5"], release, check=False, timeout=180)
        run(["docker", "image", "rm", APP_IMAGE, WEB_IMAGE], check=False)
        print(logs[-6000:])  # shown with a failure


def confined(stack, service) -> hardening.Confined:
    found = [c for c in stack["confined"] if c.service == service]
    assert len(found) == 1, f"{service}: {len(found)} containers"
    return found[0]


def test_the_hardened_stack_comes_up_healthy(stack):
    assert stack["up"].returncode == 0, stack["up"].stderr[-3000:]
    health = {c["Config"]["Labels"]["com.docker.compose.service"]: (c["State"].get("Health") or {}).get("Status")
              for c in stack["inspect"]}
    assert health == {name: "healthy" for name in hardening.SERVICES}


@pytest.mark.parametrize("service", sorted(hardening.SERVICES))
def test_the_engine_applied_the_confinement(stack, service):
    c = confined(stack, service)
    assert c.read_only and c.has_no_new_privileges and c.drops_all_capabilities and not c.privileged
    assert c.user == hardening.SERVICES[service].user and not c.is_root
    assert 0 < c.pids_limit == hardening.SERVICES[service].pids_limit
    assert sorted(cap.removeprefix("CAP_") for cap in c.cap_add) == sorted(
        cap.name for cap in hardening.SERVICES[service].cap_add)


@pytest.mark.parametrize("service", sorted(hardening.SERVICES))
def test_the_main_process_has_no_root_and_no_capability_but_its_own(stack, service):
    c = confined(stack, service)
    status = dict(line.split(":\t", 1) for line in run(["docker", "exec", c.id, "cat", "/proc/1/status"])
                  .stdout.splitlines() if ":\t" in line)
    assert status["Uid"].split()[0] != "0"
    assert status["NoNewPrivs"].strip() == "1"
    assert int(status["CapEff"], 16) == EFFECTIVE_CAPS.get(service, 0)
    assert int(status["CapBnd"], 16) == sum(1 << {"NET_BIND_SERVICE": 10}[cap.name]
                                            for cap in hardening.SERVICES[service].cap_add)


@pytest.mark.parametrize("service", sorted(hardening.SERVICES))
def test_the_root_filesystem_refuses_writes_and_the_tmpfs_takes_them(stack, service):
    c = confined(stack, service)
    denied = run(["docker", "exec", c.id, "sh", "-c", "echo x > /etc/trackd-probe"], check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    for mount in hardening.SERVICES[service].tmpfs:
        run(["docker", "exec", c.id, "sh", "-c", f"echo x > {mount.path}/trackd-probe && rm {mount.path}/trackd-probe"])


class Local:
    """Commands on this machine, as the smoke suite's Remote runs them on a server."""

    def run(self, argv, stdin=None, timeout=60):
        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
        return Completed(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def reach(stack):
    """{(source, target): Reach}, probed from every container as the smoke suite does."""
    return hardening.probe_all(Local(), stack["confined"], hardening.ports(stack["env"]), APP_IMAGE, parallel=8)


@pytest.mark.parametrize("pair", sorted(hardening.MUST_REACH), ids="->".join)
def test_reaches_what_it_must(reach, pair):
    assert isinstance(reach[pair], hardening.Reach) and reach[pair].is_open, str(reach[pair])


@pytest.mark.parametrize("pair", sorted(hardening.MUST_NOT_REACH), ids="->".join)
def test_reaches_nothing_it_must_not(reach, pair):
    seen = reach[pair]
    assert isinstance(seen, hardening.Reach), seen
    assert not seen.is_open and seen.by_name == "unresolvable", str(seen)
    assert seen.by_ip and all(state != "open" for state in seen.by_ip.values()), str(seen)
