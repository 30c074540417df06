"""The smoke suite against the deployed simulated VPS: green on the deploy as it is, and red,
naming the cause, for each server state that broke the stack before. Every test breaks one thing
over SSH, runs the suite (the group that should notice) in a subprocess as `invoke smoke` does,
reads its JUnit XML, then restores the state and checks that the same checks pass again."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from opskit import ROOT, smoke
from opskit.facts.postgres import PROBE_TABLE
from opskit.facts.release import secrets_in

pytestmark = pytest.mark.e2e


@dataclass
class Case:
    outcome: str  # passed, failed, error, skipped
    message: str


@dataclass
class SmokeRun:
    returncode: int
    output: str
    junit: str
    cases: dict  # "test_name[param]" -> Case
    seconds: float

    def failed(self) -> list[str]:
        return sorted(n for n, c in self.cases.items() if c.outcome in ("failed", "error"))

    def explain(self) -> str:
        return f"pytest exit {self.returncode}; failed: {self.failed()}\n{self.output[-3000:]}"


def run_smoke(tmp_path, *extra, env_name: str = "local", environ: dict | None = None) -> SmokeRun:
    """The suite against `env_name` in a subprocess, as `invoke smoke` runs it (`environ` added
    to this process's environment)."""
    junit = tmp_path / f"smoke-{time.monotonic_ns()}.xml"
    # no cache: these runs must not replace the `--lf` list of the operator's own last run
    argv = [sys.executable, "-m", "pytest", *smoke.pytest_args(env_name, junit=junit,
                                                               extra=("-p", "no:cacheprovider", *extra))]
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(environ or {})})
    seconds = time.monotonic() - started
    xml = junit.read_text() if junit.exists() else ""
    cases = {}
    if xml:
        for tc in ET.fromstring(xml).iter("testcase"):
            outcome, message = "passed", ""
            for kind in ("failure", "error", "skipped"):
                node = tc.find(kind)
                if node is not None:
                    outcome = {"failure": "failed"}.get(kind, kind)
                    message = (node.get("message") or "") + "\n" + (node.text or "")
                    break
            cases[tc.get("name")] = Case(outcome, message)
    return SmokeRun(done.returncode, done.stdout + done.stderr, xml, cases, seconds)


def assert_no_secret_leaked(run: SmokeRun, env) -> None:
    leaked = secrets_in(run.output + run.junit, env.secrets)
    assert not leaked, f"the smoke output or its JUnit XML holds the value of {leaked}"


def assert_caught(run: SmokeRun, test: str, *fragments: str) -> None:
    """`test` failed, and its message names each fragment (the cause, the service, the file)."""
    case = run.cases.get(test)
    assert case is not None, f"{test} did not run: {run.explain()}"
    assert case.outcome == "failed", f"{test} {case.outcome} though the server is broken:\n{run.explain()}"
    missing = [f for f in fragments if f not in case.message]
    assert not missing, f"{test} failed without naming {missing}:\n{case.message[:1500]}"
    print(f"caught: {test}: {case.message.strip().splitlines()[0][:300]}")
    assert run.returncode == 1, run.explain()


#: checked after every restore too: the stack must be exactly what the release describes again
RESTORED = "test_service_config_matches_release"


def assert_passed(run: SmokeRun, *tests: str) -> None:
    tests = tests + tuple(n for n in run.cases if n.startswith(RESTORED + "["))
    bad = {t: (run.cases[t].outcome if t in run.cases else "not run") for t in tests
           if t not in run.cases or run.cases[t].outcome != "passed"}
    assert not bad, f"after restoring the state: {bad}\n{run.explain()}"


def only(*tests: str) -> tuple[str, str]:
    """A -k expression that selects these tests (every parameter), and the restore check."""
    names = [t.split("[")[0] for t in tests] + [RESTORED]
    return ("-k", " or ".join(dict.fromkeys(names)))


@contextmanager
def broken(deployed, setup, restore):
    """Break the VPS with `setup()`; always `restore()` it, then wait until the stack is healthy."""
    try:
        setup()
        yield
    finally:
        restore()
        deployed.wait_healthy()


# -- green first ------------------------------------------------------------------------------------


def test_smoke_suite_green_on_the_deployed_vps(live, tmp_path):
    run = run_smoke(tmp_path)
    assert run.returncode == 0, run.explain()
    assert len(run.cases) >= 50, f"only {len(run.cases)} checks ran"
    assert "all " in run.output and "checks passed on local" in run.output
    # its time is reported, not asserted: speed is the benchmark's to measure, never a timed test
    print(f"smoke suite: {len(run.cases)} checks in {run.seconds:.1f}s (process wall time)")
    assert_no_secret_leaked(run, live.env)


def test_smoke_summary_names_the_failure_and_the_command_to_see_more(live, tmp_path):
    path = f"{live.path}/secrets/api_key"
    with broken(live, lambda: live.run(["chmod", "0644", path]),
                lambda: live.run(["chmod", "0444", path])):
        run = run_smoke(tmp_path, "-m", "files")
    summary = run.output.split("opskit smoke", 1)[-1]
    assert "FAIL test_secret_file_mode_0444_and_owned_by_deploy_user[api_key]" in summary \
        and "more: ls -l" in summary, run.output[-2000:]
    assert smoke.rerun_hint("local") in summary


# -- each broken state, caught and named -----------------------------------------------------------


def test_stopped_worker_is_caught(live, tmp_path):
    d = live
    worker = d.container("worker")
    tests = ("test_service_running[worker]", "test_celery_worker_answers_ping")
    with broken(d, lambda: d.run(["docker", "stop", worker]), lambda: d.run(["docker", "start", worker])):
        run = run_smoke(tmp_path, "-m", "containers or celery")
    assert_caught(run, "test_service_running[worker]", "worker", "exited", "logs --tail 100 worker")
    assert_caught(run, "test_celery_worker_answers_ping", "no Celery worker answered ping", "worker")
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def test_redis_published_on_all_addresses_is_caught(live, tmp_path):
    d = live
    override = "/tmp/opskit-e2e-redis-published.yml"
    text = b"services:\n  redis:\n    ports: [\"0.0.0.0:6379:6379\"]\n"

    def setup():
        d.connection.write_file(override, text, 0o600)
        d.run(d.compose("up", "-d", "--wait", "redis", files=[override]), timeout=180)

    def restore():
        d.run(d.compose("up", "-d", "--wait", "redis"), timeout=180)
        d.run(["rm", "-f", override])

    with broken(d, setup, restore):
        run = run_smoke(tmp_path, "-m", "exposure or host")
    assert_caught(run, "test_service_not_published[redis]", "redis", "0.0.0.0:6379->6379/tcp")
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only("test_service_not_published")), "test_service_not_published[redis]")


def _caddy_reload_with(d, sed: str):
    """Reload Caddy with an edited copy of its live Caddyfile (the file itself stays intact)."""
    caddy = d.container("caddy")
    d.run(["docker", "exec", caddy, "sh", "-c",
           f"sed {shlex.quote(sed)} /etc/caddy/Caddyfile > /tmp/Caddyfile.e2e && "
           "caddy reload --config /tmp/Caddyfile.e2e --adapter caddyfile"])


def _caddy_restore(d):
    caddy = d.container("caddy")
    d.run(["docker", "exec", caddy, "caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"])


def test_flower_without_basic_auth_is_caught(live, tmp_path):
    d = live
    tests = ("test_flower_requires_auth", "test_caddy_guards_flower_with_basic_auth")
    with broken(d, lambda: _caddy_reload_with(d, "/basic_auth {/,/}/d"), lambda: _caddy_restore(d)):
        run = run_smoke(tmp_path, "-m", "http")
    assert_caught(run, "test_flower_requires_auth", d.env.domains.flower, "answered 200 without credentials")
    assert_caught(run, "test_caddy_guards_flower_with_basic_auth", d.env.domains.flower, "no basic auth")
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def test_caddy_read_timeout_of_5s_is_caught(live, tmp_path):
    d = live
    tests = ("test_caddy_api_read_timeout_matches_inventory", "test_sse_stream_stays_open_past_two_heartbeats")
    with broken(d, lambda: _caddy_reload_with(d, "s/read_timeout [0-9a-z]*/read_timeout 5s/"), lambda: _caddy_restore(d)):
        run = run_smoke(tmp_path, "-m", "http")
    inventory_timeout = f"{d.env.sse.read_timeout.seconds:g}s"
    assert_caught(run, "test_caddy_api_read_timeout_matches_inventory", d.env.domains.api, "read_timeout",
                  "is 5s", inventory_timeout)
    # the simulated VPS's heartbeat is shorter than 5 s, so its stream outlives this read timeout;
    # a read timeout that really cuts the SSE client is the next test's case
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def test_caddy_read_timeout_below_the_heartbeat_cuts_the_sse_client(live, tmp_path):
    """The SSE client itself notices a proxy that cuts quiet streams, whatever the config says."""
    d = live
    timeout_ms = max(int(d.env.sse.heartbeat.ms / 2), 200)
    tests = ("test_sse_stream_stays_open_past_two_heartbeats", "test_sse_heartbeat_shorter_than_caddy_read_timeout")
    with broken(d, lambda: _caddy_reload_with(d, f"s/read_timeout [0-9a-z]*/read_timeout {timeout_ms}ms/"),
                lambda: _caddy_restore(d)):
        run = run_smoke(tmp_path, *only(*tests))
    assert_caught(run, "test_sse_stream_stays_open_past_two_heartbeats", d.env.domains.api, "was closed after",
                  "0 heartbeat(s)")
    assert_caught(run, "test_sse_heartbeat_shorter_than_caddy_read_timeout", "not shorter than Caddy's read_timeout")
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def psql(d, sql: str, role: str | None = None):
    """`sql` in the app database, as `role` (default: the admin role) over the container's socket."""
    pg = d.env.postgres
    d.run(["docker", "exec", "-i", d.container("postgres"), "psql", "-X", "-v", "ON_ERROR_STOP=1",
           "-U", role or pg.admin_role, "-d", pg.database, "-c", sql])


def test_ui_role_given_create_is_caught(live, tmp_path):
    d = live
    ui = d.env.postgres.ui_role
    tests = ("test_ui_role_cannot_create_table", "test_ui_role_has_no_create_privilege")
    with broken(d, lambda: psql(d, f'GRANT CREATE ON SCHEMA public TO "{ui}"'),
                lambda: psql(d, f'REVOKE CREATE ON SCHEMA public FROM "{ui}"')):
        run = run_smoke(tmp_path, "-m", "postgres")
    assert_caught(run, "test_ui_role_cannot_create_table", ui, "could CREATE TABLE")
    assert_caught(run, "test_ui_role_has_no_create_privilege", ui, "CREATE on schema public")
    assert_no_secret_leaked(run, d.env)
    # the probe table was created inside a rolled-back transaction: nothing stays behind
    done = d.run(["docker", "exec", "-i", d.container("postgres"), "psql", "-X", "-At", "-U", d.env.postgres.admin_role,
                  "-d", d.env.postgres.database, "-c", f"SELECT to_regclass('public.{PROBE_TABLE}')"])
    assert done.stdout.decode().strip() == ""
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def test_container_on_an_old_image_is_caught(live, tmp_path):
    """The release's api image tag moves to a newer build while the containers keep the old one
    (a rebuild without a recreate): the worker runs a stale image."""
    d = live
    ref = d.manifest["images"]["worker"]
    original = d.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref]).stdout.decode().strip()
    worker = d.container("worker")
    made = {}

    def setup():
        done = d.run(["docker", "commit", "--pause=false", "--change", "LABEL opskit.e2e=newer-build", worker])
        made["id"] = done.stdout.decode().strip()
        d.run(["docker", "tag", made["id"], ref])

    def restore():
        d.run(["docker", "tag", original, ref])
        if made.get("id"):
            d.run(["docker", "rmi", made["id"]], check=False)

    with broken(d, setup, restore):
        run = run_smoke(tmp_path, "-m", "containers")
    assert_caught(run, "test_service_runs_release_image[worker]", "worker", "stale image", ref)
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only("test_service_runs_release_image")), "test_service_runs_release_image[worker]")


def test_secret_file_mode_0644_is_caught(live, tmp_path):
    d = live
    path = f"{d.path}/secrets/redis_password"
    test = "test_secret_file_mode_0444_and_owned_by_deploy_user[redis_password]"
    with broken(d, lambda: d.run(["chmod", "0644", path]), lambda: d.run(["chmod", "0444", path])):
        run = run_smoke(tmp_path, "-m", "files")
    assert_caught(run, test, "redis_password", "0644")
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only("test_secret_file_mode_0444_and_owned_by_deploy_user")), test)


def test_event_loop_closed_in_worker_log_is_caught(live, tmp_path):
    d = live
    line = "[2025-01-01 00:00:00,000: ERROR/ForkPoolWorker-1] Failed to match job: RuntimeError: Event loop is closed"

    def setup():
        # the worker's PID 1 stderr is what `docker logs` records
        d.run(["docker", "exec", d.container("worker"), "sh", "-c", f"echo {shlex.quote(line)} >> /proc/1/fd/2"])

    def restore():
        # a log cannot be edited: the worker gets a fresh container (and log) of the same release
        # (no --no-deps: it would drop depends_on from the container's config hash)
        d.run(d.compose("up", "-d", "--force-recreate", "--wait", "worker"), timeout=180)

    with broken(d, setup, restore):
        run = run_smoke(tmp_path, "-m", "logs")
    assert_caught(run, "test_logs_free_of_incident[event_loop_closed]", "worker", "Event loop is closed",
                  "run_in_worker_loop")
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only("test_logs_free_of_incident")), "test_logs_free_of_incident[event_loop_closed]")
