"""Inventory validation: every class of error names its key path, the bad value and the fix,
and all problems come out at once."""

from __future__ import annotations

import stat
import subprocess

import pytest

from opskit import inventory
from opskit.errors import InventoryError, SecretError
from opskit.inventory import SECRET_NAMES
from opskit.secrets import Secret
from tests.conftest import ENVIRONMENTS


def problems_of(make_env, name, edit=None, environ=None) -> list[str]:
    with pytest.raises(InventoryError) as info:
        make_env(name, edit, environ)
    return info.value.problems


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_every_environment_of_the_real_inventory_is_valid(name):
    env = inventory.load(name, with_secrets=False)
    assert env.name == name
    assert set(env.services) == {"api", "worker", "beat", "flower", "frontend"}


def test_local_is_the_simulated_vps_with_internal_tls_and_offline_images(make_env):
    env = make_env("local")
    assert env.vps is not None and env.tls.mode == "internal"
    assert env.images == {"postgres": "opskit/postgres:15", "redis": "opskit/redis:7", "caddy": "opskit/caddy:2"}
    assert env.ssh.host == "127.0.0.1" and env.ship_images


def test_production_keeps_official_images_and_example_domains(make_env):
    env = make_env("production")
    assert env.images == {"postgres": "postgres:16", "redis": "redis:7", "caddy": "caddy:2"}
    assert env.domains.api == "api.example.com" and env.tls.is_acme and env.tls.email
    assert env.postgres.admin_role == "job_agent_admin" and env.postgres.ui_role == "job_agent_ui"
    assert env.postgres.publish == "127.0.0.1:5433"
    assert env.sse.read_timeout.seconds == 600 and env.sse.heartbeat.seconds == 15


def test_environment_overrides_merge_key_by_key(make_env):
    env = make_env("production")
    assert env.resources["worker"].memory == "2g"  # from the environment
    assert env.resources["api"].memory == "1g"  # still from defaults


def test_missing_environment_names_the_known_ones(make_env):
    assert problems_of(make_env, "local", lambda raw: raw["environments"].pop("local")) == [
        "environments.local: no such environment (known: production, staging)"
    ]


def test_unknown_keys_are_all_reported_with_their_paths(make_env):
    def edit(raw):
        raw["environments"]["production"]["domain"] = "x"
        raw["environments"]["production"]["tls"] = {"mode": "acme", "email": "a@b.cd", "staple": True}
    problems = problems_of(make_env, "production", edit)
    assert "environments.production.domain: unknown key (expected one of: " in problems[0]
    assert problems[1] == "environments.production.tls.staple: unknown key (expected one of: acme_ca, acme_ca_root, email, mode)"


def test_a_domain_that_is_not_a_hostname(make_env):
    problems = problems_of(make_env, "production",
                           lambda raw: raw["environments"]["production"]["domains"].update(api="api example com"))
    assert problems == ["environments.production.domains.api: 'api example com' is not a hostname "
                        "(expected lower-case labels joined by dots, e.g. api.example.com)"]


def test_a_port_out_of_range_is_named_where_it_was_set(make_env):
    problems = problems_of(make_env, "production", lambda raw: raw["defaults"]["ssh"].update(port=70000))
    assert problems == ["defaults.ssh.port: port 70000 is out of range (expected 1 to 65535)"]


def test_a_duration_that_does_not_parse(make_env):
    problems = problems_of(make_env, "staging",
                           lambda raw: raw["environments"]["staging"].update(sse={"read_timeout": "ten minutes"}))
    assert problems == ["environments.staging.sse.read_timeout: 'ten minutes' is not a duration "
                        "(expected e.g. 600s, 10m, 1h30m or 250ms)"]


def test_a_stop_grace_period_is_read_per_service_and_the_worker_has_one_by_default(make_env):
    env = make_env("staging")
    assert str(env.services["worker"].stop_grace_period) == "30s" and env.services["api"].stop_grace_period is None
    env = make_env("staging", lambda raw: raw["defaults"]["services"]["api"].update(stop_grace_period="45s"))
    assert str(env.services["api"].stop_grace_period) == "45s"


@pytest.mark.parametrize("service, value, bounds", [("worker", "9s", "10s..3600s"), ("worker", "2h", "10s..3600s"),
                                                    ("api", "500ms", "1s..3600s")])
def test_a_stop_grace_period_out_of_bounds_is_named_with_its_bounds(make_env, service, value, bounds):
    problems = problems_of(make_env, "staging",
                           lambda raw: raw["defaults"]["services"][service].update(stop_grace_period=value))
    assert len(problems) == 1 and problems[0].startswith(f"defaults.services.{service}.stop_grace_period: "), problems
    assert f"is outside {bounds}" in problems[0] and "e.g. stop_grace_period: 30s" in problems[0]
    assert ("soft shutdown ends 5s before it" in problems[0]) == (service == "worker")


def test_an_import_check_that_is_not_a_module_path(make_env):
    def edit(raw):
        raw["defaults"]["builds"]["api"]["import_checks"] = ["alembic.config:Config", "import celery"]
    problems = problems_of(make_env, "local", edit)
    assert problems == ["defaults.builds.api.import_checks[1]: 'import celery' is not a python module path "
                        "(expected e.g. alembic.config or alembic.config:Config)"]


def test_a_missing_required_key_says_where_to_set_it(make_env):
    problems = problems_of(make_env, "production", lambda raw: raw["environments"]["production"].pop("host"))
    assert problems == ["environments.production.host: is required (set it here or under defaults.host)"]


def test_postgres_may_only_be_published_on_loopback(make_env):
    problems = problems_of(make_env, "production", lambda raw: raw["environments"]["production"].update(
        postgres={"publish": "0.0.0.0:5433"}))
    assert problems == ["environments.production.postgres.publish: '0.0.0.0:5433' is not on loopback "
                        "(expected e.g. 127.0.0.1:5433; Postgres must never listen on a public address)"]


def test_a_heartbeat_must_be_shorter_than_the_proxy_read_timeout(make_env):
    problems = problems_of(make_env, "production", lambda raw: raw["environments"]["production"].update(
        sse={"read_timeout": "10s", "heartbeat": "15s"}))
    assert problems == ["environments.production.sse.heartbeat: 15s must be shorter than sse.read_timeout (10s), "
                        "or the proxy cuts streams between heartbeats"]


def test_acme_needs_an_email(make_env):
    problems = problems_of(make_env, "production", lambda raw: raw["defaults"]["tls"].pop("email"))
    assert problems == ["environments.production.tls.email: is required (set it here or under defaults.tls.email)"]


def test_only_a_simulated_vps_may_generate_its_secrets(make_env):
    problems = problems_of(make_env, "production",
                           lambda raw: raw["environments"]["production"].update(generate_secrets=True))
    assert problems[0].startswith("environments.production.generate_secrets: only a simulated VPS")


def test_all_problems_come_out_at_once(make_env):
    def edit(raw):
        prod = raw["environments"]["production"]
        prod["domains"]["app"] = "-bad-.example.com"
        prod["ssh"] = {"port": 0}
        prod["sse"] = {"heartbeat": "soon"}
        prod["colour"] = "blue"
    with pytest.raises(InventoryError) as info:
        make_env("production", edit)
    assert len(info.value.problems) == 4
    text = str(info.value)
    assert text.startswith("inventory.yaml: 4 problems:")
    for path in ("domains.app", "ssh.port", "sse.heartbeat", "colour"):
        assert f"environments.production.{path}:" in text


def test_a_missing_secret_is_named_with_its_variable(make_env, secrets_env):
    environ = dict(secrets_env)
    del environ["OPSKIT_API_KEY"]
    with pytest.raises(SecretError) as info:
        make_env("production", environ=environ)
    assert info.value.problems == [
        "defaults.secrets.api_key: environment variable OPSKIT_API_KEY is not set "
        "(the API key the frontend sends as X-API-Key); export it, or use file:api_key with a secrets file"]


def test_a_secret_written_in_place_of_a_reference_is_refused(make_env):
    problems = problems_of(make_env, "production", lambda raw: raw["environments"]["production"].update(
        secrets={"api_key": "hunter2"}))
    assert problems == ["environments.production.secrets.api_key: 'hunter2' is not a secret reference "
                        "(expected env:VARIABLE or file:KEY; never the secret itself)"]


def test_secrets_resolve_from_env_and_file_and_never_print(make_env, secrets_env):
    prod = make_env("production")
    assert prod.secrets["api_key"].reveal() == secrets_env["OPSKIT_API_KEY"]
    assert "test-" not in repr(prod.secrets) and str(prod.secrets["api_key"]) == "***"
    staging = make_env("staging")
    assert staging.secrets["redis_password"].reveal() == "file-redis_password"
    assert all(isinstance(v, Secret) for v in staging.secrets.values())


def test_a_key_missing_from_the_secrets_file_is_named(make_env, tmp_path):
    def edit(raw):
        path = tmp_path / "partial.yaml"
        path.write_text("api_key: x\n")
        path.chmod(0o600)
        raw["environments"]["staging"]["secrets_file"] = str(path)
    with pytest.raises(SecretError) as info:
        make_env("staging", edit)
    assert len(info.value.problems) == len(SECRET_NAMES) - 1
    assert f"key 'redis_password' is missing from {tmp_path / 'partial.yaml'}" in str(info.value)


def test_local_secrets_are_generated_once_with_mode_0600(make_env, tmp_path):
    first = make_env("local")
    path = tmp_path / "secrets/local.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = make_env("local")
    assert first.secrets == second.secrets
    assert len({s.reveal() for s in first.secrets.values()}) == len(first.secrets)  # all different


def test_the_inventory_must_be_a_mapping():
    with pytest.raises(InventoryError) as info:
        inventory.parse(["not", "a", "mapping"], "local")
    assert info.value.problems == ["the file must be a mapping with `defaults:` and `environments:`"]
