"""What the outside can reach: only Caddy (80/443) and Postgres on loopback are published, and
Redis answers nothing without its password."""

from __future__ import annotations

import pytest

from .checks import listing, problem

pytestmark = pytest.mark.exposure


def test_service_not_published(hidden_service, docker, server):
    c = docker.one(hidden_service)
    assert c is not None, problem(f"{hidden_service}: no container of the project", server.compose_hint("ps", "-a"))
    assert not c.ports, problem(
        f"{hidden_service} ({c.name}) is published on the server: {listing(c.ports)}; only Caddy and Postgres "
        "(on loopback) may publish ports", f"docker port {c.name}")


def test_caddy_publishes_only_http_and_https(docker, server):
    c = docker.one("caddy")
    assert c is not None, problem("caddy: no container of the project", server.compose_hint("ps", "-a"))
    extra = [str(p) for p in c.ports if p.host_port not in ("80", "443")]
    assert not extra, problem(f"caddy ({c.name}) publishes more than 80 and 443: {listing(extra)}",
                              f"docker port {c.name}")
    assert {p.host_port for p in c.ports if p.container_port.endswith("/tcp")} >= {"80", "443"}, problem(
        f"caddy ({c.name}) does not publish both 80 and 443 over TCP: {listing(c.ports) or 'nothing'}",
        f"docker port {c.name}")


def test_postgres_published_on_loopback_only(docker, env, server):
    c = docker.one("postgres")
    assert c is not None, problem("postgres: no container of the project", server.compose_hint("ps", "-a"))
    want = f"{env.postgres.publish_host}:{env.postgres.publish_port}->5432/tcp"
    got = sorted(str(p) for p in c.ports)
    assert got == [want], problem(
        f"postgres ({c.name}) is published as {listing(got) or 'nothing'}; the inventory wants {want} only "
        "(never 0.0.0.0: reach it through `invoke db.tunnel`)", f"docker port {c.name}")


def test_postgres_not_listening_publicly(host_facts, env):
    ports = {env.postgres.publish_port, 5432}
    public = [str(listener) for listener in host_facts.listeners if listener.is_public and listener.port in ports]
    assert not public, problem(f"Postgres is reachable on a public address: {listing(public)}",
                               "ss -tlnp | grep -E ':(5432|5433)'")


def test_redis_refuses_commands_without_password(redis_facts, server):
    answer = redis_facts.without_password
    assert "NOAUTH" in answer, problem(
        f"redis answered a command sent without its password: {answer[:80]!r} (requirepass is not set)",
        server.compose_hint("exec", "redis", "redis-cli", "ping"))


def test_redis_accepts_the_inventory_password(redis_facts, server):
    answer = redis_facts.with_password.split()
    assert answer[-1:] == ["PONG"], problem(
        f"redis did not answer PING after AUTH with the inventory's redis_password: {' '.join(answer)[:120]!r}",
        server.compose_hint("logs", "--tail", "50", "redis"))
