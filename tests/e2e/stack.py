"""Reaching the deployed stack on the simulated VPS from the tests: SSH commands, HTTPS through
Caddy with SNI (verified against Caddy's own local CA), an SSE reader, and server snapshots."""

from __future__ import annotations

import http.client
import json
import shlex
import socket
import ssl
import tempfile
import time

import pytest

from opskit import ROOT, deploy, inventory, kit, render, vps
from opskit.runner import Runner
from opskit.sources import source_revision
from opskit.ssh import Connection


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


_ROOT_CAS: dict = {}


def _root_ca(env) -> str:
    """Caddy's local root certificate, read once per Caddy data volume (a new VPS, a new CA)."""
    key = run(env, ["docker", "volume", "inspect", "--format", "{{.CreatedAt}}", f"{env.project}_caddy_data"])
    if key not in _ROOT_CAS:
        pem = run(env, compose(env, "exec", "-T", "caddy", "cat", "/data/caddy/pki/authorities/local/root.crt"))
        with tempfile.NamedTemporaryFile("w", prefix="caddy-root-", suffix=".crt", delete=False) as fh:
            fh.write(pem)
        _ROOT_CAS[key] = fh.name
    return _ROOT_CAS[key]


def _connection(env, domain: str, timeout: float) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=_root_ca(env))
    port = env.vps.https_port
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout), server_hostname=domain)
    return conn


def https(env, domain: str, path: str, headers=None, timeout: float = 15):
    """GET through Caddy on the VPS's published 443, as a browser for `domain` would."""
    conn = _connection(env, domain, timeout)
    try:
        conn.request("GET", path, headers={"Host": domain, **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def sse(env, path: str, headers=None, seconds: float = 5.0) -> list[tuple[float, str]]:
    """Lines of an SSE stream on the API domain for `seconds`, with their arrival times."""
    conn = _connection(env, env.domains.api, seconds + 10)
    conn.request("GET", path, headers={"Host": env.domains.api, "Accept": "text/event-stream", **(headers or {})})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:500]
    lines, start = [], time.monotonic()
    conn.sock.settimeout(0.5)
    try:
        while time.monotonic() - start < seconds:
            try:
                line = resp.readline()
            except (socket.timeout, TimeoutError):
                continue
            if not line:
                break
            if line.strip():
                lines.append((round(time.monotonic() - start, 2), line.decode().strip()))
    finally:
        conn.close()
    return lines


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
