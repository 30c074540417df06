"""Reaching the deployed stack on the simulated VPS from the tests: SSH commands, HTTPS through
Caddy with SNI (the smoke suite's client, verified against Caddy's own local CA), and snapshots."""

from __future__ import annotations

import json
import shlex
import time

import pytest

from opskit import ROOT, deploy, inventory, kit, render, vps
from opskit.runner import Runner
from opskit.sources import source_revision
from opskit.ssh import Connection
from tests.smoke.web import SseResult, Web, sse_check


def run(env, argv, timeout: float = 120):
    with Connection(env.ssh) as conn:
        done = conn.run(argv, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"`{shlex.join(argv)[:200]}` on the VPS exited {done.returncode}: {done.output[-1500:]}")
    return done.stdout.decode(errors="replace")


def compose(env, *args) -> list[str]:
    return deploy.compose(f"{env.remote_dir}/current", *args)


def services(env) -> dict[str, tuple[str, str]]:
    """{service: (state, health)} of the running project (one-off containers excluded)."""
    out = run(env, ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={env.project}",
                    "--filter", "label=com.docker.compose.oneoff=False", "--format", "{{json .}}"])
    states = {}
    for line in out.splitlines():
        row = json.loads(line)
        labels = dict(kv.split("=", 1) for kv in row["Labels"].split(",") if "=" in kv)
        health = "healthy" if "(healthy)" in row["Status"] else "unhealthy" if "(unhealthy)" in row["Status"] \
            else "starting" if "(health: starting)" in row["Status"] else "none"
        states[labels["com.docker.compose.service"]] = (row["State"], health)
    return states


def snapshot(env) -> dict:
    """What a failed deploy must leave alone: current release, lock, and each service's container."""
    out = run(env, ["sh", "-c", f"readlink {env.remote_dir}/current; echo; cat {env.remote_dir}/deploy.lock/info "
                                f"2>/dev/null; echo; ls {env.remote_dir}/releases"])
    current, lock, releases = (out.split("\n", 2) + ["", ""])[:3]
    ids = run(env, ["docker", "ps", "--filter", f"label=com.docker.compose.project={env.project}",
                    "--filter", "label=com.docker.compose.oneoff=False",
                    "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}'])
    containers = {svc: cid for cid, svc in (line.split() for line in ids.splitlines())}
    return {"current": current.strip().rsplit("/", 1)[-1], "lock": lock.strip(),
            "releases": sorted(releases.split()), "containers": containers}


_WEB: dict = {}


def web(env) -> Web:
    """HTTPS to the VPS's published 443 as a browser for each domain would reach it, verified
    against Caddy's local CA, read once per Caddy data volume (a new VPS, a new CA)."""
    key = run(env, ["docker", "volume", "inspect", "--format", "{{.CreatedAt}}", f"{env.project}_caddy_data"])
    if key not in _WEB:
        pem = run(env, compose(env, "exec", "-T", "caddy", "cat", "/data/caddy/pki/authorities/local/root.crt"))
        _WEB[key] = Web("127.0.0.1", env.vps.http_port, env.vps.https_port, root_pem=pem)
    return _WEB[key]


def https(env, domain: str, path: str, headers=None):
    """One GET through Caddy: (status, lower-case headers, body)."""
    response = web(env).request(domain, path, headers)
    return response.status, response.headers, response.body


def keepalives(env, path: str, headers: dict) -> SseResult:
    """An SSE stream on the API domain, read until two `: keep-alive` comments came (or it failed)."""
    heartbeat = env.sse.heartbeat.seconds
    return sse_check(web(env), env.domains.api, path, headers, heartbeat, bound=0.1, trigger=lambda: None,
                     run_id="no event expected")


@pytest.fixture(scope="session")
def from_nothing():
    """A fresh simulated VPS (removed and started again), then `invoke deploy` of the sources."""
    env = inventory.load("local")
    kit.build_kit()
    config = vps.VpsConfig.from_environment(env)
    vps.down(config)
    vps.up(config)
    started = time.monotonic()
    release = render.render(env)
    with Connection(env.ssh) as conn:
        outcome = deploy.deploy(env, release, conn, Runner(conn), deploy.Options(), source_revision(ROOT))
    print(f"\ndeploy from nothing: {time.monotonic() - started:.1f}s, "
          f"{outcome.bytes_shipped / 1e6:.0f} MB of layers shipped")
    return type("Live", (), {"env": env, "outcome": outcome})
