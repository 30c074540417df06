"""Least privilege on the deployed simulated VPS: each point of it broken by hand turns its smoke
check red, naming the cause, and the check is green again once the state is restored.

Roles, secret files, no secret in logs, Caddy's headers and log filter, confined containers,
networks by need. The server as a deploy leaves it is green: `test_smoke_catches` runs the suite whole.
"""

from __future__ import annotations

import pytest

from tests.e2e.test_smoke_catches import (_caddy_reload_with, _caddy_restore, assert_caught, assert_no_secret_leaked,
                                          assert_passed, broken, only, psql, run_smoke)

pytestmark = pytest.mark.e2e


def _as_superuser(d, sql: str):
    psql(d, sql, role=d.env.postgres.superuser_role)


def _recreate(d, service: str):
    """A fresh container of the current release (a log cannot be edited, `docker update` is not in
    Compose's config hash)."""
    d.run(d.compose("up", "-d", "--force-recreate", "--wait", service), timeout=240)


def _failed_with_prefix(run, name: str) -> list[str]:
    return [n for n, c in run.cases.items() if n.startswith(name + "[") and c.outcome == "failed"]


# -- Postgres roles ------------------------------------------------------------------------------------


def test_an_app_role_made_superuser_is_caught(live, tmp_path):
    d = live
    admin = d.env.postgres.admin_role
    tests = ("test_no_app_role_is_a_superuser[admin]", "test_admin_role_has_no_power_beyond_its_objects")
    with broken(d, lambda: _as_superuser(d, f'ALTER ROLE "{admin}" SUPERUSER CREATEROLE'),
                lambda: _as_superuser(d, f'ALTER ROLE "{admin}" NOSUPERUSER NOCREATEROLE')):
        run = run_smoke(tmp_path, "-m", "postgres")
    assert_caught(run, "test_no_app_role_is_a_superuser[admin]", admin)
    assert_caught(run, "test_admin_role_has_no_power_beyond_its_objects", admin)
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def test_the_ui_role_given_alembic_version_is_caught(live, tmp_path):
    d = live
    ui = d.env.postgres.ui_role
    tests = ("test_ui_role_may_not_write_alembic_version", "test_ui_role_cannot_update_alembic_version")
    with broken(d, lambda: _as_superuser(d, f'GRANT UPDATE ON alembic_version TO "{ui}"'),
                lambda: _as_superuser(d, f'REVOKE UPDATE ON alembic_version FROM "{ui}"')):
        run = run_smoke(tmp_path, "-m", "postgres")
    for test in tests:
        assert_caught(run, test, ui, "alembic_version")
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


# -- secrets: files closed to others, in no log ----------------------------------------------------


def test_the_secrets_folder_opened_to_others_is_caught(live, tmp_path):
    d = live
    folder = d.layout.secrets
    test = "test_secrets_folder_closed_to_others[installed]"
    with broken(d, lambda: d.run(["chmod", "0755", folder]), lambda: d.run(["chmod", "0700", folder])):
        run = run_smoke(tmp_path, "-m", "files")
    assert_caught(run, test, folder)
    assert_passed(run_smoke(tmp_path, *only(test)), test)


def test_a_secret_written_to_a_container_log_is_caught_by_name_not_value(live, tmp_path):
    d = live
    api = d.container("api")
    test = "test_logs_free_of_secrets[api]"
    # the newline: Docker holds back a line that has none
    with broken(d, lambda: d.run(["docker", "exec", api, "sh", "-c", "{ cat /run/secrets/api_key; echo; } > /proc/1/fd/1"]),
                lambda: _recreate(d, "api")):
        run = run_smoke(tmp_path, "-m", "logs")
    assert_caught(run, test, "api_key", "api")
    assert_no_secret_leaked(run, d.env)
    assert_passed(run_smoke(tmp_path, *only(test)), test)


def test_caddy_without_its_log_filter_logs_the_key_of_a_dropped_stream_and_is_caught(live, tmp_path):
    """The smoke suite's own SSE client drops its stream (with the API key): without the filter,
    reverse_proxy's warning writes the key into Caddy's log, and the log scan finds it by its hash."""
    d = live
    tests = ("test_caddy_logs_drop_credentials", "test_logs_free_of_secrets[caddy]")
    with broken(d, lambda: _caddy_reload_with(d, "/format filter {/,/^[[:space:]]*}$/d"), lambda: _recreate(d, "caddy")):
        run = run_smoke(tmp_path, "-m", "http or logs")
    assert_caught(run, "test_caddy_logs_drop_credentials", "credentials")
    assert_caught(run, "test_logs_free_of_secrets[caddy]", "api_key", "caddy")
    assert_no_secret_leaked(run, d.env)
    run = run_smoke(tmp_path, "-m", "http or logs")  # the stream dropped again, the log clean
    assert_passed(run, *tests)


# -- Caddy's own answers ----------------------------------------------------------------------------


def test_caddys_own_401_without_the_headers_is_caught(live, tmp_path):
    d = live
    tests = ("test_caddys_own_answers_carry_the_security_headers[flower-401]", "test_no_server_banner[flower-401]")
    with broken(d, lambda: _caddy_reload_with(d, "/handle_errors {/,/^[[:space:]]*}$/d"), lambda: _caddy_restore(d)):
        run = run_smoke(tmp_path, "-m", "http")
    for test in tests:
        assert_caught(run, test, d.env.domains.flower)
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def test_a_site_without_its_csp_or_with_a_server_banner_is_caught(live, tmp_path):
    d = live
    with broken(d, lambda: _caddy_reload_with(d, "/Content-Security-Policy/d; /-Server/d"), lambda: _caddy_restore(d)):
        run = run_smoke(tmp_path, "-m", "http")
    csp = _failed_with_prefix(run, "test_csp_matches_inventory")
    banner = _failed_with_prefix(run, "test_no_server_banner")
    assert len(csp) == len(d.env.domains.items()), run.explain()
    assert "test_no_server_banner[api]" in banner and "test_no_server_banner[flower]" in banner, run.explain()
    assert "Content-Security-Policy" in run.cases[csp[0]].message and "Server" in run.cases[banner[0]].message
    assert run.returncode == 1
    after = run_smoke(tmp_path, *only("test_csp_matches_inventory", "test_no_server_banner"))
    assert_passed(after, *(n for n in after.cases if n.startswith(("test_csp", "test_no_server"))))


# -- confined containers, networks by need -----------------------------------------------------------


def test_a_frontend_joined_to_redis_network_is_caught(live, tmp_path):
    d = live
    network, frontend = f"{d.env.project}_redis", d.container("frontend")
    tests = ("test_service_cannot_reach_what_it_must_not[frontend->redis]",
             "test_service_cannot_reach_what_it_must_not[frontend->flower]")
    with broken(d, lambda: d.run(["docker", "network", "connect", network, frontend]),
                lambda: d.run(["docker", "network", "disconnect", network, frontend])):
        run = run_smoke(tmp_path, "-m", "exposure")
    for test in tests:
        assert_caught(run, test, "frontend")
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def test_a_container_without_a_pids_limit_is_caught(live, tmp_path):
    d = live
    frontend = d.container("frontend")
    test = "test_service_has_a_pids_limit[frontend]"
    with broken(d, lambda: d.run(["docker", "update", "--pids-limit=-1", frontend]), lambda: _recreate(d, "frontend")):
        run = run_smoke(tmp_path, "-m", "containers")
    assert_caught(run, test, "frontend")
    assert_passed(run_smoke(tmp_path, *only(test)), test)


def test_a_frontend_as_root_writable_and_with_capabilities_is_caught(live, tmp_path):
    d = live
    override = "/tmp/opskit-e2e-unconfined.yml"
    text = (b"services:\n  frontend:\n    read_only: false\n    user: \"0:0\"\n"
            b"    security_opt: !reset []\n    cap_drop: !reset []\n")
    tests = [f"{t}[frontend]" for t in ("test_service_root_filesystem_is_read_only", "test_service_does_not_run_as_root",
                                        "test_service_gains_no_new_privileges",
                                        "test_service_drops_every_capability_but_its_documented_ones")]

    def setup():
        d.connection.write_file(override, text, 0o600)
        d.run(d.compose("up", "-d", "--wait", "--no-deps", "frontend", files=[override]), timeout=240)

    def restore():
        d.run(d.compose("up", "-d", "--wait", "frontend"), timeout=240)
        d.run(["rm", "-f", override])

    with broken(d, setup, restore):
        run = run_smoke(tmp_path, "-m", "containers")
    for test in tests:
        assert_caught(run, test, "frontend")
    assert_passed(run_smoke(tmp_path, *only(*tests)), *tests)


def test_docker_inspect_shows_no_secret_of_any_container(live):
    """Checked here too, from outside the smoke suite: every value of the environment's secrets,
    against the whole `docker inspect` of every container of the project."""
    d = live
    ids = d.out(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={d.env.project}"]).split()
    assert len(ids) >= 8
    inspected = d.out(["docker", "inspect", *ids])
    leaked = [name for name, secret in d.env.secrets.items() if secret.reveal() in inspected]
    assert not leaked, f"docker inspect holds the value of {leaked}"
    assert "_FILE=/run/secrets/" in inspected  # the control: the secrets are there, by their paths
