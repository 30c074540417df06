"""The smoke suite's setup: `--env` picks the environment of inventory.yaml, one verified SSH
connection serves every check (testinfra's `host` included), and facts are gathered once, in
parallel, by the sources the selected tests need.

    python -m pytest tests/smoke --env local            # the simulated VPS
    python -m pytest tests/smoke --env production -m "http or celery"
    python -m pytest tests/smoke --env local -k redis --junitxml=build/smoke.xml
"""

from __future__ import annotations

import os
import re
import time

import pytest

from opskit import inventory, smoke
from opskit.errors import OpskitError
from opskit.layout import Layout
from opskit.ssh import Connection

from .remote import Remote, testinfra_host
from .server import Server

#: fact fixture -> the server source it reads
SOURCE_OF = {
    "host_facts": "host", "clock": "clock", "release": "release", "docker": "docker", "compose_plan": "plan",
    "caddy": "caddy", "web": "caddy", "acme_failures": "acme", "log_hits": "logs", "pg_admin": "pg_admin", "pg_ui": "pg_ui",
    "redis_facts": "redis", "probe": "probe", "sse": "sse", "sshd_auth": "sshd_auth", "provisioned": "provisioning",
    "backups": "backup",
}
_ENV = pytest.StashKey[object]()
_STARTED = pytest.StashKey[float]()


def pytest_addoption(parser):
    group = parser.getgroup("opskit smoke")
    group.addoption("--env", dest="opskit_env", default=os.environ.get("OPSKIT_ENV", "local"),
                    help="environment of inventory.yaml to check (default: $OPSKIT_ENV or local)")
    group.addoption("--inventory", dest="opskit_inventory", default=os.environ.get("OPSKIT_INVENTORY"),
                    help="inventory file (default: $OPSKIT_INVENTORY or the repository's inventory.yaml)")


def pytest_configure(config):
    for name, text in smoke.MARKERS.items():
        config.addinivalue_line("markers", f"{name}: smoke group: {text}")
    config.stash[_STARTED] = time.monotonic()
    if not config.option.help and not config.option.version:
        environment(config)  # a bad inventory stops the run here, with its own message


def environment(config):
    """The Environment under test, loaded once (with its secrets: the suite logs in with them)."""
    if _ENV not in config.stash:
        name = config.getoption("opskit_env")
        try:
            config.stash[_ENV] = inventory.load(name, path=config.getoption("opskit_inventory"))
        except OpskitError as exc:
            raise pytest.UsageError(f"smoke: cannot load environment {name!r}: {exc}") from None
    return config.stash[_ENV]


# -- parametrization: one report line per service, domain, env file --------------------------------


def pytest_generate_tests(metafunc):
    env = environment(metafunc.config)
    names = metafunc.fixturenames
    if "service" in names:
        metafunc.parametrize("service", smoke.expected_services(env))
    if "hidden_service" in names:
        metafunc.parametrize("hidden_service", [s for s in smoke.expected_services(env) if s not in smoke.PUBLISHERS])
    if "secret_file" in names:
        metafunc.parametrize("secret_file", smoke.secret_files(env))
    if "site" in names:
        sites = list(env.domains.items())
        metafunc.parametrize("site", sites, ids=[domain for _, domain in sites])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    # checks that compare a fact over time go last, so the run itself is their window
    items.sort(key=lambda item: bool(getattr(getattr(item, "function", None), "run_last", False)))


# -- the connection and the facts ------------------------------------------------------------------


@pytest.fixture(scope="session")
def env(request):
    return environment(request.config)


@pytest.fixture(scope="session")
def layout(env) -> Layout:
    """Where things live on the server under test."""
    return Layout(env.remote_dir)


@pytest.fixture(scope="session")
def remote(env):
    connection = Connection(env.ssh, timeout=10)
    try:
        connection.open()
    except OpskitError as exc:
        pytest.exit(f"smoke: cannot reach {env.name}: {exc}", returncode=3)
    yield Remote(connection)
    connection.close()


@pytest.fixture(scope="session")
def host(remote):
    """testinfra's Host on the verified connection: host.file, host.run, host.exists..."""
    return testinfra_host(remote)


def web_address(env) -> tuple:
    """Where HTTPS for the environment's domains is reached: the simulated VPS publishes Caddy
    on this machine's loopback; a real server on its own address."""
    if env.vps is not None:
        return ("127.0.0.1", env.vps.http_port, env.vps.https_port)
    return (env.ssh.host, 80, 443)


@pytest.fixture(scope="session")
def server(request, env, remote):
    srv = Server(env, remote, web_address(env))
    # the tests left after -k/-m selection say which sources to start
    needed = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    srv.want_sse = "sse" in needed
    # the slow sources first: the SSE check holds a stream open for two heartbeats
    order = ["sse", "probe", "docker", "caddy", "acme", "plan", "logs", "host", "release", "pg_admin", "pg_ui", "redis",
             "clock", "sshd_auth", "backup"]
    srv.prefetch([s for s in order if s in {SOURCE_OF[f] for f in needed if f in SOURCE_OF}])
    yield srv
    srv.close()


def _fact(name):
    @pytest.fixture(scope="session", name=name)
    def fixture(server):
        return server.get(SOURCE_OF[name])
    return fixture


# one session fixture per fact: host_facts, clock, release, docker, compose_plan, caddy, log_hits,
# pg_admin, pg_ui, redis_facts, probe, sse, sshd_auth, acme_failures (`web` is built from caddy's, below)
for _name in SOURCE_OF:
    if _name != "web":
        globals()[_name] = _fact(_name)


@pytest.fixture(scope="session")
def web(server, caddy):
    from .web import Web

    return Web(*server.web_address, caddy.root_pem)


@pytest.fixture(scope="session")
def manifest(release, env, layout):
    assert release.manifest is not None, (
        f"no current release on {env.name}: {layout.current}/manifest.json is unreadable "
        f"({release.manifest_error})\nmore: ls -l {layout.root} {layout.current}/ "
        f"(deploy one with `invoke deploy -e {env.name}`)")
    return release.manifest


@pytest.fixture(scope="session", autouse=True)
def _junit_environment(record_testsuite_property, env):
    record_testsuite_property("environment", env.name)
    record_testsuite_property("target", str(env.ssh))


# -- the summary an operator reads --------------------------------------------------------------


MAX_SUMMARY_LINES = 25
#: failures that explain many others: shown first
ROOT_CAUSES = ("test_current_release_is_linked", "test_no_deploy_lock_left_behind",
               "test_every_release_service_has_one_container", "test_docker_engine_running")


def _cause(report) -> tuple[str, str]:
    """(first line of the failure, its `more:` command) from a failed report."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    more = next((line[len("more:"):].strip() for line in lines if line.startswith("more:")), "")
    first = lines[0] if lines else "failed"
    first = re.sub(r"^(AssertionError|Failed): ", "", first)
    first = re.sub(r"^(?:[a-z_]\w*\.)+(?=[A-Z]\w*: )", "", first)  # opskit.errors.GatherError -> GatherError
    return first, more


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _ENV not in config.stash:
        return
    env = config.stash[_ENV]
    stats = terminalreporter.stats
    failed = [r for key in ("failed", "error") for r in stats.get(key, []) if getattr(r, "nodeid", "")]
    passed = len([r for r in stats.get("passed", []) if getattr(r, "when", "call") == "call"])
    skipped = len(stats.get("skipped", []))
    if not failed and not passed and not skipped:
        return  # nothing ran (--collect-only, or stopped before the first check)
    seconds = time.monotonic() - config.stash.get(_STARTED, time.monotonic())
    tr = terminalreporter
    tr.section("opskit smoke", sep="=", bold=True)
    where = f"{env.name} ({env.ssh})"
    if not failed:
        tr.write_line(f"all {passed} checks passed on {where} in {seconds:.1f}s"
                      + (f" ({skipped} skipped)" if skipped else ""), green=True)
        return
    tr.write_line(f"{len(failed)} check(s) failed on {where}, {passed} passed, in {seconds:.1f}s:", red=True)
    # the failures that explain the others first (no release, a deploy under way), then by test;
    # a test failing the same way for several services or domains is one line
    failed.sort(key=lambda r: not any(name in r.nodeid for name in ROOT_CAUSES))
    groups: dict = {}
    for report in failed:
        func, _, param = report.nodeid.split("::", 1)[-1].partition("[")
        param = param[:-1]
        cause, more = _cause(report)
        key = (func, cause.replace(param, "*") if param else cause)
        groups.setdefault(key, []).append((param, cause, more))
    for i, ((func, _), items) in enumerate(groups.items()):
        if i == MAX_SUMMARY_LINES:
            tr.write_line(f"  ... and {len(groups) - i} more kinds of failure (see above)")
            break
        params = [p for p, _, _ in items if p]
        label = f"{func}[{', '.join(params)}]" if params else func
        _, cause, more = items[0]
        tr.write_line(f"  FAIL {label}: {cause}" + (f" (and {len(items) - 1} alike)" if len(items) > 1 else ""))
        if more:
            tr.write_line(f"       more: {more}")
    port = f"-p {env.ssh.port} " if env.ssh.port != 22 else ""
    tr.write_line(f"'more:' commands run on the server: ssh {port}-i {env.ssh.key_file} {env.ssh.user}@{env.ssh.host}")
    tr.write_line(f"every failure in full: {smoke.rerun_hint(env.name)}")
