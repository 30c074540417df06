"""Rendering: the compose file and the Caddyfile say what the stack needs, for every environment,
and the same inputs give the same bytes."""

from __future__ import annotations

import bcrypt
import pytest
import yaml

from opskit import release_folder, render
from opskit.errors import RenderError
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


def test_the_release_holds_compose_caddy_env_files_sql_and_a_manifest(release):
    assert {"docker-compose.yml", "Caddyfile", "manifest.json", "postgres-init/roles.psql",
            "postgres-init/10-roles.sh"} <= set(release.files)
    env_files = {p for p in release.files if p.startswith("env/")}
    assert env_files == {f"env/{s}.env" for s in SERVICES - {"caddy"}}


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


def test_env_files_are_0600_and_nothing_else_is_secret(release):
    for path, f in release.files.items():
        assert (f.mode == 0o600) == path.startswith("env/"), path
        assert f.secret == path.startswith("env/"), path


def test_no_secret_value_appears_outside_env_files(env, release):
    for path, f in release.files.items():
        if path.startswith("env/"):
            continue
        text = f.content.decode()
        for name, secret in env.secrets.items():
            assert secret.reveal() not in text, f"{name} leaks into {path}"


def test_each_service_gets_only_its_own_secrets(env, release):
    def keys(service):
        lines = release.files[f"env/{service}.env"].content.decode().splitlines()
        return {line.split("=", 1)[0] for line in lines if "=" in line}

    assert "DATABASE_URL" not in keys("flower") and "DATABASE_URL" not in keys("beat")
    assert keys("redis") == {"REDIS_PASSWORD"}
    frontend = release.files["env/frontend.env"].content.decode()
    assert f"postgresql://{env.postgres.ui_role}:" in frontend
    assert env.secrets["postgres_admin_password"].reveal() not in frontend


# -- compose ------------------------------------------------------------------------------------


def test_compose_runs_every_service(compose):
    assert set(compose["services"]) == SERVICES


def test_every_service_restarts_unless_stopped(compose):
    assert {s: c["restart"] for s, c in compose["services"].items()} == dict.fromkeys(SERVICES, "unless-stopped")


def test_every_service_has_a_healthcheck(compose):
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name


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
    """Compose interpolates `$VAR` in the file itself at parse time; the Redis command must keep
    `$REDIS_PASSWORD` for the container's shell, so the file holds `$$` (else: --requirepass "")."""
    text = release.files["docker-compose.yml"].content.decode()
    assert '--requirepass \\"$$REDIS_PASSWORD\\"' in text or '--requirepass "$$REDIS_PASSWORD"' in text, \
        [line for line in text.splitlines() if "requirepass" in line]


def test_redis_requires_its_password_from_the_env_file(compose):
    redis = compose["services"]["redis"]
    assert "--requirepass" in redis["command"][-1] and "$$REDIS_PASSWORD" in redis["command"][-1]
    assert redis["env_file"] == ["./env/redis.env"]


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


def test_one_site_per_domain(env, caddy):
    sites = [c.words[0] for c in caddy.children if c.words and not c.name.startswith("(")]
    assert sorted(sites) == sorted([env.domains.app, env.domains.api, env.domains.flower])


def test_the_api_streams_unbuffered_with_the_inventory_read_timeout(env, caddy):
    proxy = caddyfile.site(caddy, env.domains.api).find("reverse_proxy")
    assert proxy.words == ["reverse_proxy", "api:8000"]
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


def test_security_headers_and_no_server_banner(env, caddy):
    for domain in (env.domains.app, env.domains.api, env.domains.flower):
        header = [w[0] for w in (c.words for c in caddyfile.site(caddy, domain).find("header").children)]
        assert {"-Server", "X-Content-Type-Options", "X-Frame-Options"} <= set(header)
        assert ("Strict-Transport-Security" in header) == env.tls.is_acme


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
    assert "~ env/api.env: API_KEY changed (values not shown)" in text
    assert "new-key-value" not in text and "test-api_key-value" not in text
