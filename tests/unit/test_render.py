"""Rendering: the compose file and the Caddyfile say what the stack needs, for every environment,
and the same inputs give the same bytes."""

from __future__ import annotations

from urllib.parse import quote

import bcrypt
import pytest
import yaml

from opskit import release_folder, render
from opskit.errors import InventoryError, RenderError
from opskit.inventory.model import DEFAULT_CSP
from tests import caddyfile
from tests.conftest import ENVIRONMENTS

SERVICES = {"caddy", "api", "worker", "beat", "flower", "redis", "postgres", "frontend"}


@pytest.fixture(params=ENVIRONMENTS)
def env(request, make_env):
    return make_env(request.param)


@pytest.fixture
def release(env):
    return render.render(env)


@pytest.fixture
def compose(release):
    return yaml.safe_load(release.files["docker-compose.yml"].content)


@pytest.fixture
def caddy(release):
    return caddyfile.parse(release.files["Caddyfile"].content.decode())


# -- release ------------------------------------------------------------------------------------


SECRET_FILES = {"postgres_superuser_password", "postgres_admin_password", "postgres_ui_password", "redis_password",
                "redis_conf", "api_key", "app_secret_key", "better_auth_secret", "database_url_admin",
                "database_url_ui", "redis_url", "celery_broker_url", "celery_result_backend"}


def test_the_release_holds_compose_caddy_secret_files_sql_and_a_manifest(release):
    assert {"docker-compose.yml", "Caddyfile", "manifest.json", "postgres-init/roles.psql",
            "postgres-init/10-roles.sh"} <= set(release.files)
    assert {p for p in release.files if p.startswith("secrets/")} == {f"secrets/{n}" for n in SECRET_FILES}
    assert not [p for p in release.files if p.startswith("env/")]


def test_same_inputs_give_the_same_bytes(make_env, tmp_path):
    first, second = render.render(make_env("production")), render.render(make_env("production"))
    assert {p: f.content for p, f in first.files.items()} == {p: f.content for p, f in second.files.items()}
    release_folder.write(first, tmp_path / "a")
    release_folder.write(second, tmp_path / "b")
    assert release_folder.read(tmp_path / "a") == release_folder.read(tmp_path / "b")


def test_the_release_id_is_the_hash_of_the_content(make_env, secrets_env):
    base = render.render(make_env("production")).id
    rotated = dict(secrets_env, OPSKIT_API_KEY="rotated")
    assert render.render(make_env("production", environ=rotated)).id != base
    longer = render.render(make_env("production", lambda raw: raw["defaults"]["sse"].update(read_timeout="900s"))).id
    assert longer != base


def test_the_manifest_names_the_release_images_and_files(release):
    import json

    manifest = json.loads(release.files["manifest.json"].content)
    assert manifest["release"] == release.id
    assert manifest["images"]["worker"] == manifest["images"]["api"]  # one image, four processes
    assert manifest["images"]["api"].startswith("jobagent/api:")
    assert set(manifest["files"]) == set(release.files) - {"manifest.json"}
    assert manifest["source_revision"]


def test_an_image_tag_follows_its_build_inputs(make_env, contexts):
    before = render.render(make_env("local")).images["api"]
    (contexts["api"] / "main.py").write_text("print('changed')\n")
    after = render.render(make_env("local")).images["api"]
    assert before != after and render.render(make_env("local")).images["frontend"] == render.render(
        make_env("local")).images["frontend"]


def test_secret_files_are_0444_and_secret_and_nothing_else_is_secret(release):
    """0444: containers of other uids read them through Compose's bind mount; the 0700 folder
    (release_folder, deploy's upload) keeps everyone else out."""
    for path, f in release.files.items():
        assert (f.mode == 0o444) == path.startswith("secrets/"), path
        assert f.secret == path.startswith("secrets/"), path


def test_a_secret_file_holds_the_value_alone(env, release):
    for name in ("api_key", "postgres_superuser_password", "better_auth_secret"):
        assert release.files[f"secrets/{name}"].content == env.secrets[name].reveal().encode()


def test_no_secret_value_appears_outside_secret_files(env, release):
    for path, f in release.files.items():
        if path.startswith("secrets/"):
            continue
        text = f.content.decode()
        for name, secret in env.secrets.items():
            assert secret.reveal() not in text, f"{name} leaks into {path}"
            assert quote(secret.reveal(), safe="") not in text, f"{name} leaks URL-encoded into {path}"


def test_each_service_gets_only_its_own_secret_files(env, compose):
    def files(service):
        return set(compose["services"][service].get("secrets", []))

    assert files("flower") == files("beat") == {"redis_url", "celery_broker_url", "celery_result_backend"}
    assert files("redis") == {"redis_conf", "redis_password"}
    assert files("worker") == {"database_url_admin", "redis_url", "celery_broker_url", "celery_result_backend"}
    assert files("api") == files("worker") | {"api_key", "app_secret_key"}
    assert files("frontend") == {"database_url_ui", "api_key", "better_auth_secret"}
    assert files("postgres") == {"postgres_superuser_password", "postgres_admin_password", "postgres_ui_password"}
    assert files("caddy") == set()
    declared = {name: s["file"] for name, s in compose["secrets"].items()}
    assert declared == {name: f"{env.remote_dir}/secrets/{name}" for name in SECRET_FILES}


def test_no_environment_value_is_a_secret_and_file_variables_name_mounted_files(env, compose):
    values = {s.reveal() for s in env.secrets.values()}
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert value not in values, (name, key)
            if key.endswith("_FILE"):
                assert value.startswith("/run/secrets/") and value.split("/")[-1] in service["secrets"], (name, key)
        assert "env_file" not in service, name


def test_the_urls_carry_the_roles_and_the_url_encoded_passwords(env, release):
    ui = release.files["secrets/database_url_ui"].content.decode()
    assert ui.startswith(f"postgresql://{env.postgres.ui_role}:{quote(env.secrets['postgres_ui_password'].reveal(), safe='')}@")
    admin = release.files["secrets/database_url_admin"].content.decode()
    assert admin.startswith(f"postgresql+psycopg://{env.postgres.admin_role}:")
    assert release.files["secrets/celery_broker_url"].content.decode().endswith("@redis:6379/1")


def test_postgres_boots_as_the_superuser_from_its_password_file(env, compose):
    pg = compose["services"]["postgres"]
    assert pg["environment"]["POSTGRES_USER"] == env.postgres.superuser_role != env.postgres.admin_role
    assert pg["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_superuser_password"
    assert "POSTGRES_PASSWORD" not in pg["environment"]
    assert pg["healthcheck"]["test"][pg["healthcheck"]["test"].index("--username") + 1] == env.postgres.superuser_role


def test_a_rotated_secret_changes_the_label_of_exactly_the_services_that_read_it(make_env, secrets_env):
    def labels(environ):
        compose = yaml.safe_load(render.render(make_env("production", environ=environ)).files["docker-compose.yml"].content)
        return {n: (s.get("labels") or {}).get(render.SECRETS_LABEL) for n, s in compose["services"].items()}

    before, after = labels(secrets_env), labels(dict(secrets_env, OPSKIT_API_KEY="rotated-key"))
    assert {n for n in before if before[n] != after[n]} == {"api", "frontend"}
    assert before["caddy"] is None


# -- compose ------------------------------------------------------------------------------------


def test_compose_runs_every_service(compose):
    assert set(compose["services"]) == SERVICES


def test_every_service_restarts_unless_stopped(compose):
    assert {s: c["restart"] for s, c in compose["services"].items()} == dict.fromkeys(SERVICES, "unless-stopped")


def test_every_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


def test_the_worker_stops_with_a_soft_shutdown_that_ends_before_its_grace_period(make_env):
    def edit(raw):
        raw["defaults"]["services"]["worker"]["stop_grace_period"] = "12s"
        raw["defaults"]["services"]["api"]["stop_grace_period"] = "20s"
    services = yaml.safe_load(render.render(make_env("staging", edit)).files["docker-compose.yml"].content)["services"]
    assert services["worker"]["stop_grace_period"] == "12s" and services["api"]["stop_grace_period"] == "20s"
    assert services["worker"]["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
    assert services["worker"]["environment"]["WORKER_SOFT_SHUTDOWN_SECONDS"] == "7"
    assert "stop_grace_period" not in services["beat"] and "REMAP_SIGTERM" not in services["beat"]["environment"]


def test_the_worker_stops_within_30s_when_the_inventory_says_nothing(compose):
    worker = compose["services"]["worker"]
    assert worker["stop_grace_period"] == "30s" and worker["environment"]["WORKER_SOFT_SHUTDOWN_SECONDS"] == "25"


def test_order_waits_for_health_where_it_matters(compose):
    def deps(name):
        return {k: v["condition"] for k, v in compose["services"][name].get("depends_on", {}).items()}

    assert deps("api") == {"postgres": "service_healthy", "redis": "service_healthy"}
    assert deps("worker") == {"postgres": "service_healthy", "redis": "service_healthy"}
    assert deps("frontend") == {"postgres": "service_healthy"}


def test_nothing_that_an_api_deploy_recreates_drags_caddy_or_the_frontend_along(compose):
    # Compose recreates the dependents of a recreated service: Caddy restarting would drop every
    # connection and SSE stream on each deploy of the API
    assert "depends_on" not in compose["services"]["caddy"]
    assert "api" not in compose["services"]["frontend"]["depends_on"]


def test_only_caddy_and_loopback_postgres_are_published(env, compose):
    published = {name: s.get("ports", []) for name, s in compose["services"].items() if s.get("ports")}
    assert published == {"caddy": ["80:80", "443:443", "443:443/udp"],
                         "postgres": [f"{env.postgres.publish_host}:{env.postgres.publish_port}:5432"]}


def test_a_dollar_in_a_compose_value_is_escaped_for_the_container_to_expand(release):
    """Compose interpolates `$...` in the file itself at parse time; the Redis healthcheck must keep
    `$(cat ...)` for the container's shell, so the file holds `$$`."""
    text = release.files["docker-compose.yml"].content.decode()
    assert 'REDISCLI_AUTH=\\"$$(cat /run/secrets/redis_password)\\"' in text, \
        [line for line in text.splitlines() if "REDISCLI_AUTH" in line]


def test_redis_reads_its_password_from_a_config_file_not_argv_or_environment(env, release, compose):
    redis = compose["services"]["redis"]
    assert redis["command"] == ["redis-server", "/run/secrets/redis_conf", "--appendonly", "yes"]
    assert "environment" not in redis and "env_file" not in redis
    conf = release.files["secrets/redis_conf"].content.decode()
    assert conf.startswith("requirepass \"") and conf.endswith("\"\n") and conf.count("\n") == 1


@pytest.mark.parametrize("value, written", [
    ("plain-Value_1", '"plain-Value_1"'), ('a"b\\c', '"a\\x22b\\x5cc"'), ("x y#z", '"x y#z"'),
    ("é", '"\\xc3\\xa9"'), ("$HOME", '"$HOME"')])
def test_a_redis_config_string_escapes_quotes_backslashes_and_non_ascii_bytes(value, written):
    assert render.redis_config_string(value) == written


def test_logs_rotate(env, compose):
    for name, service in compose["services"].items():
        assert service["logging"] == {"driver": "json-file", "options": {
            "max-size": env.logging.max_size, "max-file": str(env.logging.max_files)}}, name


def test_data_lives_in_named_volumes(compose):
    assert {"postgres_data", "caddy_data"} <= set(compose["volumes"])
    assert "postgres_data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    assert "caddy_data:/data" in compose["services"]["caddy"]["volumes"]


def test_config_is_mounted_read_only_from_paths_that_outlive_a_release(env, compose):
    # a per-release path would change the container config, and so restart Postgres and Caddy,
    # on every deploy
    assert f"{env.remote_dir}/postgres-init:/docker-entrypoint-initdb.d:ro" in compose["services"]["postgres"]["volumes"]
    assert f"{env.remote_dir}/caddy:/etc/caddy:ro" in compose["services"]["caddy"]["volumes"]


def test_app_processes_share_the_built_api_image(release, compose):
    images = {s: compose["services"][s]["image"] for s in ("api", "worker", "beat", "flower")}
    assert len(set(images.values())) == 1
    assert compose["services"]["frontend"]["image"] == release.images["frontend"]


def test_resources_come_from_the_inventory(env, compose):
    assert compose["services"]["worker"]["mem_limit"] == env.resources["worker"].memory


# -- Caddy --------------------------------------------------------------------------------------


def test_one_site_per_domain_its_redirect_and_a_404_for_other_names(env, caddy):
    sites = [c.words[0] for c in caddy.children[1:] if c.words and not c.name.startswith("(")]
    domains = [env.domains.app, env.domains.api, env.domains.flower]
    assert sorted(sites) == sorted(domains + [f"http://{d}" for d in domains] + ["http://", "https://"])


@pytest.mark.parametrize("site, upstream", [("api", "api:8000"), ("app", "frontend:3000")])
def test_the_api_and_the_apps_stream_route_stream_unbuffered_with_the_inventory_read_timeout(env, caddy, site,
                                                                                             upstream):
    proxy = caddyfile.site(caddy, getattr(env.domains, site)).find("reverse_proxy")
    assert proxy.words == ["reverse_proxy", upstream]
    assert proxy.find("stream_close_delay").words == ["stream_close_delay", str(env.sse.stream_close_delay)]
    assert proxy.find("flush_interval").words == ["flush_interval", "-1"]
    assert proxy.find("transport", "read_timeout").words == ["read_timeout", str(env.sse.read_timeout)]
    assert str(env.sse.read_timeout) == "600s"


def test_flower_sits_behind_basic_auth_with_a_bcrypt_hash(env, caddy):
    flower = caddyfile.site(caddy, env.domains.flower)
    user, hashed = flower.find("basic_auth").children[0].words
    assert user == env.flower_user
    assert bcrypt.checkpw(env.secrets["flower_password"].reveal().encode(), hashed.encode())
    assert flower.find("reverse_proxy").words == ["reverse_proxy", "flower:5555"]


def test_the_app_domain_goes_to_the_frontend(env, caddy):
    assert caddyfile.site(caddy, env.domains.app).find("reverse_proxy").words == ["reverse_proxy", "frontend:3000"]


def _snippet(caddy, name):
    return next(c for c in caddy.children if c.name == f"({name})")


def _block(caddy, address):
    return next(c for c in caddy.children if c.words == [address])


def _imported_csp(caddy, address) -> str:
    """The Content-Security-Policy a site block hands to `import headers`."""
    imports = [c.words for c in _block(caddy, address).children if c.words[:2] == ["import", "headers"]]
    assert len(imports) == 1, imports
    return imports[0][2]


def test_security_headers_and_no_server_banner(env, caddy):
    header = _snippet(caddy, "security_headers").find("header")
    names = {c.words[0]: c.words[1:] for c in header.children}
    assert {"-Server", "-Via", "-X-Powered-By"} <= set(names)
    assert names["X-Content-Type-Options"] == ["nosniff"] and names["X-Frame-Options"] == ["DENY"]
    assert names["Referrer-Policy"] == ["strict-origin-when-cross-origin"]
    assert names["Content-Security-Policy"] == ["{args[0]}"]
    assert ("Strict-Transport-Security" in names) == env.tls.is_acme


def test_caddys_own_answers_go_through_the_same_headers(caddy):
    """basic_auth's 401 and a 502 skip the site's handlers: handle_errors answers them again
    through the same header block, with the status of the error."""
    headers = _snippet(caddy, "headers")
    assert [c.words for c in headers.children if c.name == "import"] == [["import", "security_headers", "{args[0]}"]]
    errors = headers.find("handle_errors")
    assert [c.words for c in errors.children] == [["import", "security_headers", "{args[0]}"],
                                                  ["respond", "{err.status_code} {err.status_text}", "{err.status_code}"]]


def test_every_site_redirect_and_catch_all_sends_its_csp(env, caddy):
    for role, domain in env.domains.items():
        want = dict(env.csp.items())[role]
        assert _imported_csp(caddy, domain) == _imported_csp(caddy, f"http://{domain}") == want, role
    assert _imported_csp(caddy, "http://") == _imported_csp(caddy, "https://") == render.CSP_UNKNOWN_HOST


def test_http_is_redirected_by_explicit_sites(env, caddy):
    """Caddy's automatic redirects come from a server that skips every site's headers."""
    for domain in (env.domains.app, env.domains.api, env.domains.flower):
        assert _block(caddy, f"http://{domain}").find("redir").words == ["redir", "https://{host}{uri}", "308"]
    for address in ("http://", "https://"):
        assert _block(caddy, address).find("respond").words == ["respond", "404"]


def test_the_logs_drop_every_credential_field(caddy):
    fields = caddy.children[0].find("log", "format")
    assert fields.words == ["format", "filter"]
    assert [c.words for c in fields.children] == [[f, "delete"] for f in render.CADDY_LOG_DROPPED]
    assert {"request>headers>X-Api-Key", "request>headers>Authorization", "request>headers>Cookie",
            "resp_headers>Set-Cookie"} <= set(render.CADDY_LOG_DROPPED)


def test_the_csp_defaults(make_env):
    env = make_env("production")
    assert env.csp.api == "default-src 'none'; frame-ancestors 'none'"
    for role in ("app", "flower"):
        policy = dict(env.csp.items())[role]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
        assert "script-src 'self' 'unsafe-inline'" in policy  # Next's and Flower's inline scripts


def test_the_inventorys_csp_reaches_its_site(make_env):
    policy = "default-src 'none'; frame-ancestors 'none'; report-uri /csp"
    env = make_env("production", lambda raw: raw["defaults"].update(csp={"api": policy}))
    caddy = caddyfile.parse(render.caddyfile(env).decode())
    assert _imported_csp(caddy, env.domains.api) == _imported_csp(caddy, f"http://{env.domains.api}") == policy
    assert _imported_csp(caddy, env.domains.app) == env.csp.app == DEFAULT_CSP["app"]


@pytest.mark.parametrize("policy, message", [
    ('default-src "self"', "double quote"),
    ("default-src 'self'\nframe-ancestors 'none'", "newline"),
    ("default-src 'self'; img-src {http.request.host}", "placeholder"),
    ("default-src 'self', script-src 'none'", "second policy"),
    ("default-src 'self' \\", "backslash"),
    ("default-src `x`", "backtick"),
    ("default-src 'self'; 1x y", "not a CSP directive"),
    ("", "expected a Content-Security-Policy"),
    (["default-src 'self'"], "expected a Content-Security-Policy"),
    ("img-src \u00e9", "non-ASCII"),
    ("default-src  ", "starts or ends with a space"),  # Hypothesis found it: HTTP drops the outer spaces
    (" default-src 'self'", "starts or ends with a space"),
])
def test_a_csp_that_would_break_the_caddyfile_is_refused_by_name(make_env, policy, message):
    with pytest.raises(InventoryError) as info:
        make_env("production", lambda raw: raw["environments"]["production"].update(csp={"flower": policy}))
    assert [p for p in info.value.problems if p.startswith("environments.production.csp.flower: ") and message in p], \
        info.value.problems


def test_an_unknown_csp_site_is_refused(make_env):
    with pytest.raises(InventoryError) as info:
        make_env("local", lambda raw: raw["defaults"].update(csp={"www": "default-src 'self'"}))
    assert any(p.startswith("defaults.csp.www: unknown key (expected one of: api, app, flower)") for p in info.value.problems)


def test_tls_is_acme_with_an_email_or_internal(env, caddy):
    options = {c.name: c.words[1:] for c in caddy.children[0].children}
    if env.tls.is_acme:
        assert options["email"] == [env.tls.email] and "local_certs" not in options
    else:
        assert "local_certs" in options and "email" not in options


def test_sse_settings_follow_the_inventory(make_env):
    env = make_env("production", lambda raw: raw["defaults"]["sse"].update(read_timeout="15m", heartbeat="20s"))
    proxy = caddyfile.site(caddyfile.parse(render.caddyfile(env).decode()), env.domains.api).find("reverse_proxy")
    assert proxy.find("transport", "read_timeout").words[1] == "900s"
    compose = yaml.safe_load(render.render(env).files["docker-compose.yml"].content)
    assert compose["services"]["api"]["environment"]["SSE_HEARTBEAT_SECONDS"] == "20"


def test_the_flower_hash_is_deterministic_and_specific_to_the_secret():
    a1, a2 = render.flower_password_hash("admin", "one"), render.flower_password_hash("admin", "one")
    b = render.flower_password_hash("admin", "two")
    assert a1 == a2 != b and a1.startswith("$2b$12$")
    assert bcrypt.checkpw(b"one", a1.encode()) and not bcrypt.checkpw(b"two", a1.encode())


# -- errors and diff ----------------------------------------------------------------------------


def test_an_undefined_template_value_names_the_file_and_line(make_env, repo_copy):
    template = repo_copy / "caddy/Caddyfile.j2"
    template.write_text(template.read_text().replace("{{ domains.app }} {", "{{ domains.www }} {"))
    with pytest.raises(RenderError) as info:
        render.render(make_env("local"), templates=repo_copy)
    message = str(info.value)
    assert message.startswith("caddy/Caddyfile.j2:") and "www" in message and "{{ domains.www }} {" in message


def test_a_template_syntax_error_names_the_line(make_env, repo_copy):
    template = repo_copy / "compose/docker-compose.yml.j2"
    template.write_text(template.read_text().replace("{% endfor %}", "{% endfro %}", 1))
    with pytest.raises(RenderError, match=r"^compose/docker-compose.yml.j2:\d+: "):
        render.render(make_env("local"), templates=repo_copy)


def test_a_missing_build_context_is_named(make_env, contexts):
    (contexts["api"] / "Dockerfile").unlink()
    with pytest.raises(RenderError, match="builds.api.context: no Dockerfile in"):
        render.render(make_env("local"))


def test_diff_shows_config_changes_and_hides_secret_values(make_env, secrets_env, tmp_path):
    old = tmp_path / "old"
    release_folder.write(render.render(make_env("production")), old)
    assert render.diff(render.render(make_env("production")), release_folder.read(old)) == ""
    changed = make_env("production", lambda raw: raw["defaults"]["sse"].update(read_timeout="900s"),
                       environ=dict(secrets_env, OPSKIT_API_KEY="new-key-value"))
    text = render.diff(render.render(changed), release_folder.read(old))
    assert "-\t\t\tread_timeout 600s" in text and "+\t\t\tread_timeout 900s" in text
    assert "~ secrets/api_key: changed (value not shown)" in text
    assert "~ secrets/app_secret_key" not in text


def test_diff_against_a_release_of_env_files_names_files_and_never_values(make_env):
    """A server still on a release from before secret files: its env files are secret too."""
    release = render.render(make_env("production"))
    old = {"env/api.env": b'API_KEY="test-api_key-value"\n', "docker-compose.yml": b"name: x\n"}
    text = render.diff(release, old)
    assert "- env/api.env: removed\n" in text and "+ secrets/api_key: new secret file (value not shown)\n" in text
    assert "test-api_key-value" not in text
    assert "new-key-value" not in text and "test-api_key-value" not in text
