"""Caddy and HTTPS, from outside as a browser sees them: a certificate per domain, the API key,
Flower's basic auth, the Caddyfile's headers and the inventory's Content-Security-Policy on every
answer (Caddy's own 401, redirects and 404s too), no Server banner; with ACME, HSTS and no failed
certificate attempt in Caddy's log; and the running proxy config:
streaming unbuffered, the inventory's read timeout, logs that drop credentials, and an SSE stream
that outlives two heartbeats and delivers an event a Celery task published."""

from __future__ import annotations

import http.client
import posixpath
import ssl

import pytest

from opskit import render
from opskit.facts import caddy as caddy_facts
from opskit.layout import Layout

from .checks import listing, problem
from .web import basic_auth, flower_credentials

pytestmark = pytest.mark.http

#: a path per site that answers 200 when all is well
PROBE_PATH = {"app": "/api/health", "api": "/health", "flower": "/healthcheck"}


def _live_caddyfile(env) -> str:
    """The Caddyfile Caddy loads (the release's copy, installed in Caddy's own folder)."""
    return posixpath.join(Layout(env.remote_dir).caddy, "Caddyfile")


def _caddy_logs(server):
    return server.compose_hint("logs", "--tail", "50", "caddy")


def _get(web, domain, path, server, headers=None, scheme="https"):
    try:
        return web.get(domain, path, headers, scheme=scheme)
    except ssl.SSLCertVerificationError as exc:
        pytest.fail(problem(f"https://{domain}: certificate not valid for {domain} against {web.trust}: "
                            f"{exc.verify_message or exc}", _caddy_logs(server)))
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        pytest.fail(problem(f"{scheme}://{domain}{path} via {web.where(scheme)}: {type(exc).__name__}: {exc}",
                            _caddy_logs(server)))


def _flower_auth(env, site_role):
    return flower_credentials(env) if site_role == "flower" else None


# -- certificates, redirects, headers (one line per domain) ------------------------------------------


def test_https_certificate_matches_domain(site, web, server):
    role, domain = site
    resp = _get(web, domain, PROBE_PATH[role], server)
    names = [v for k, v in (resp.certificate or {}).get("subjectAltName", ()) if k == "DNS"]
    assert domain in names, problem(f"https://{domain}: the certificate names {listing(names) or 'nothing'}",
                                    _caddy_logs(server))


def test_http_redirects_to_https(site, web, server):
    role, domain = site
    resp = _get(web, domain, "/", server, scheme="http")
    location = resp.headers.get("location", "")
    assert resp.status in (301, 302, 307, 308) and location.startswith(f"https://{domain}"), problem(
        f"http://{domain}/ answered {resp.status} {location!r}, not a redirect to https://{domain}/",
        _caddy_logs(server))


def _fixed_headers(release, env):
    """The response headers the live Caddyfile sets alike on every site (the CSP, one per site,
    has its own check) and the ones it removes."""
    wanted, removed = caddy_facts.caddyfile_headers(release.live_caddyfile)
    wanted.pop("Content-Security-Policy", None)
    assert wanted, problem(f"the live Caddyfile ({_live_caddyfile(env)}) sets no response header",
                           f"cat {_live_caddyfile(env)}")
    return wanted, removed


def test_security_headers_present(site, web, release, env, server):
    role, domain = site
    wanted, removed = _fixed_headers(release, env)
    resp = _get(web, domain, PROBE_PATH[role], server, _flower_auth(env, role))
    missing = [f"{k}: {v}" for k, v in wanted.items() if resp.headers.get(k.lower()) != v]
    leaked = [k for k in removed if k.lower() in resp.headers]
    assert not missing and not leaked, problem(
        f"https://{domain}{PROBE_PATH[role]}: "
        + "; ".join((["missing or different: " + listing(missing)] if missing else [])
                    + (["present though the Caddyfile removes them: " + listing(leaked)] if leaked else [])),
        f"curl -sI https://{domain}{PROBE_PATH[role]}")


def test_csp_matches_inventory(site, web, env, server):
    role, domain = site
    want = dict(env.csp.items())[role]
    resp = _get(web, domain, PROBE_PATH[role], server, _flower_auth(env, role))
    got = resp.headers.get("content-security-policy")
    assert got == want, problem(
        f"https://{domain}{PROBE_PATH[role]} sends Content-Security-Policy {got!r}, not the inventory's csp.{role} "
        f"{want!r}", f"curl -sI https://{domain}{PROBE_PATH[role]}; grep Content-Security-Policy {_live_caddyfile(env)}")


#: a name that is none of the sites, sent to the server's address
UNKNOWN_NAME = "opskit-smoke-unknown.invalid"
#: the answers Caddy writes itself, as a client meets them: (site, scheme, the status it must be)
OWN_ANSWERS = {
    "flower-401": ("flower", "https", 401),
    "app-redirect": ("app", "http", 308),
    "api-redirect": ("api", "http", 308),
    "flower-redirect": ("flower", "http", 308),
    "unknown-name-http": (None, "http", 404),
    "unknown-name-https": (None, "https", 404),
}
#: headers that name the server's software
BANNERS = ("Server", "Via", "X-Powered-By")


def _own_answer(kind, web, env, server):
    """(what was asked, the answer, the CSP it must carry) of one of OWN_ANSWERS."""
    role, scheme, _ = OWN_ANSWERS[kind]
    if role is None:  # over https, a site's name in SNI but another in Host
        asked, resp = f"{scheme}://{UNKNOWN_NAME}/", _get(web, env.domains.api, "/", server, {"Host": UNKNOWN_NAME},
                                                           scheme=scheme)
        return asked, resp, render.CSP_UNKNOWN_HOST
    domain = dict(env.domains.items())[role]
    return f"{scheme}://{domain}/", _get(web, domain, "/", server, scheme=scheme), dict(env.csp.items())[role]


@pytest.mark.parametrize("kind", list(OWN_ANSWERS))
def test_caddys_own_answers_carry_the_security_headers(kind, web, release, env, server):
    wanted, _ = _fixed_headers(release, env)
    asked, resp, csp = _own_answer(kind, web, env, server)
    status = OWN_ANSWERS[kind][2]
    assert resp.status == status, problem(f"{asked} answered {resp.status}, not Caddy's own {status}",
                                          f"curl -sI {asked}")
    missing = [f"{k}: {v}" for k, v in {**wanted, "Content-Security-Policy": csp}.items()
               if resp.headers.get(k.lower()) != v]
    assert not missing, problem(
        f"{asked} ({resp.status}, Caddy's own answer) lacks or changes {listing(missing)}: Caddy answers it "
        "outside the site's handlers (handle_errors, the explicit http:// sites of the Caddyfile)",
        f"curl -sI {asked}; cat {_live_caddyfile(env)}")


@pytest.mark.parametrize("kind", ["app", "api", "flower", *OWN_ANSWERS])
def test_no_server_banner(kind, web, env, server):
    if kind in OWN_ANSWERS:
        asked, resp, _ = _own_answer(kind, web, env, server)
    else:
        domain = dict(env.domains.items())[kind]
        asked, resp = f"https://{domain}{PROBE_PATH[kind]}", _get(web, domain, PROBE_PATH[kind], server,
                                                                  _flower_auth(env, kind))
    shown = [f"{k}: {resp.headers[k.lower()]}" for k in BANNERS if k.lower() in resp.headers]
    assert not shown, problem(f"{asked} ({resp.status}) names its software: {listing(shown)}",
                              f"curl -sI {asked}; grep -n -- '-Server' {_live_caddyfile(env)}")


def test_hsts_enabled(site, web, env, server):
    role, domain = site
    if not env.tls.is_acme:
        pytest.skip(f"tls mode {env.tls.mode}: the Caddyfile sends HSTS only with publicly trusted (ACME) certificates")
    resp = _get(web, domain, PROBE_PATH[role], server, _flower_auth(env, role))
    value = resp.headers.get("strict-transport-security", "")
    assert "max-age=" in value, problem(f"https://{domain}: no Strict-Transport-Security header",
                                        f"curl -sI https://{domain}/")


def test_acme_certificate_obtained(site, acme_failures, env, server):
    """A certificate Caddy cannot get shows nowhere but in its log (the site answers TLS alerts, a
    browser says only "not private"): its latest attempt for each domain must not have failed."""
    role, domain = site
    if not env.tls.is_acme:
        pytest.skip(f"tls mode {env.tls.mode}: Caddy's local CA issues without ACME, nothing can fail to validate")
    reason = acme_failures.get(domain)
    ca = env.tls.acme_ca or "Let's Encrypt"
    assert reason is None, problem(
        f"{domain}: Caddy could not get its certificate from {ca}: {reason}\n"
        f"(does {domain} resolve to this server, and are 80 and 443 open to the CA? `invoke status -e {env.name}` "
        "lists every such domain)", f"{server.compose_hint('logs', 'caddy')} 2>&1 | grep -F tls.obtain")


# -- who may do what -----------------------------------------------------------------------------------


def test_health_is_public(web, env, server):
    resp = _get(web, env.domains.api, "/health", server)
    assert resp.status == 200, problem(f"https://{env.domains.api}/health answered {resp.status} without a key "
                                       f"(want 200): {resp.body[:100]!r}", server.compose_hint("logs", "--tail", "50", "api"))


def test_api_requires_key(web, env, server):
    resp = _get(web, env.domains.api, "/tasks/opskit-smoke", server)
    assert resp.status == 401, problem(f"https://{env.domains.api}/tasks/... answered {resp.status} without "
                                       "X-API-Key (want 401)", server.compose_hint("logs", "--tail", "50", "api"))


def test_api_rejects_wrong_key(web, env, server):
    resp = _get(web, env.domains.api, "/tasks/opskit-smoke", server, {"X-API-Key": "opskit-smoke-wrong-key"})
    assert resp.status == 401, problem(f"https://{env.domains.api}/tasks/... answered {resp.status} to a wrong "
                                       "X-API-Key (want 401)", server.compose_hint("logs", "--tail", "50", "api"))


def test_api_accepts_its_key(web, env, server):
    resp = _get(web, env.domains.api, "/tasks/opskit-smoke", server, {"X-API-Key": env.secrets["api_key"].reveal()})
    assert resp.status == 200, problem(f"https://{env.domains.api}/tasks/... answered {resp.status} with the "
                                       "inventory's api_key (want 200)", server.compose_hint("logs", "--tail", "50", "api"))


def test_flower_requires_auth(web, env, server):
    resp = _get(web, env.domains.flower, "/", server)
    assert resp.status == 401, problem(f"https://{env.domains.flower}/ answered {resp.status} without credentials "
                                       "(want 401): Flower is open to anyone", _caddy_logs(server))


def test_flower_rejects_wrong_password(web, env, server):
    resp = _get(web, env.domains.flower, "/", server, basic_auth(env.flower_user, "opskit-smoke-wrong-password"))
    assert resp.status == 401, problem(f"https://{env.domains.flower}/ answered {resp.status} to a wrong password "
                                       "(want 401)", _caddy_logs(server))


def test_flower_accepts_its_credentials(web, env, server):
    resp = _get(web, env.domains.flower, "/healthcheck", server, flower_credentials(env))
    assert resp.status == 200, problem(
        f"https://{env.domains.flower}/healthcheck answered {resp.status} with user {env.flower_user} and the "
        "inventory's flower_password (want 200)", server.compose_hint("logs", "--tail", "50", "flower"))


def test_app_serves_pages(web, env, server):
    resp = _get(web, env.domains.app, "/", server)
    assert resp.status == 200, problem(f"https://{env.domains.app}/ answered {resp.status} (want 200): "
                                       f"{resp.body[:100]!r}", server.compose_hint("logs", "--tail", "50", "frontend"))


# -- the running Caddy config ---------------------------------------------------------------------------


def _site(caddy, domain, server):
    handlers = caddy.sites.get(domain)
    assert handlers, problem(f"the running Caddy config has no site {domain} (sites: {listing(caddy.sites)})",
                             server.compose_hint("exec", "caddy", "wget", "-qO-", "http://127.0.0.1:2019/config/"))
    return handlers


def _api_proxy(caddy, env, server):
    proxies = caddy_facts.handlers_of(_site(caddy, env.domains.api, server), "reverse_proxy")
    assert proxies, problem(f"{env.domains.api}: no reverse_proxy in the running Caddy config")
    return proxies[0]


def test_caddy_routes_domain_to_its_service(site, caddy, env, server):
    role, domain = site
    service = {"app": "frontend", "api": "api", "flower": "flower"}[role]
    want = f"{service}:{env.services[service].port}"
    dials = [d for p in caddy_facts.handlers_of(_site(caddy, domain, server), "reverse_proxy") for d in caddy_facts.upstreams(p)]
    assert dials == [want], problem(f"{domain} proxies to {listing(dials) or 'nothing'}, not {want}",
                                    f"cat {_live_caddyfile(env)}")


def test_caddy_streams_api_unbuffered(caddy, env, server):
    proxy = _api_proxy(caddy, env, server)
    assert proxy.get("flush_interval") == -1, problem(
        f"{env.domains.api}: reverse_proxy flush_interval is {proxy.get('flush_interval', 'unset (buffered)')}, "
        "not -1: SSE events would wait in Caddy's buffer", f"cat {_live_caddyfile(env)}")


def test_caddy_api_read_timeout_matches_inventory(caddy, env, server):
    proxy = _api_proxy(caddy, env, server)
    got = caddy_facts.duration_seconds((proxy.get("transport") or {}).get("read_timeout"))
    want = env.sse.read_timeout.seconds
    assert got == want, problem(
        f"{env.domains.api}: Caddy's running read_timeout to the API is "
        f"{'unset' if got is None else f'{got:g}s'}, the inventory's sse.read_timeout is {want:g}s: "
        "quiet SSE streams are cut after the shorter one",
        f"cat {_live_caddyfile(env)}; " + server.compose_hint("exec", "caddy", "caddy", "reload", "--config",
                                                                    "/etc/caddy/Caddyfile"))


def test_caddy_keeps_streams_across_reloads(caddy, env, server):
    proxy = _api_proxy(caddy, env, server)
    got = caddy_facts.duration_seconds(proxy.get("stream_close_delay"))
    want = env.sse.stream_close_delay.seconds
    assert got == want, problem(
        f"{env.domains.api}: stream_close_delay is {'unset' if got is None else f'{got:g}s'}, the inventory's "
        f"sse.stream_close_delay is {want:g}s: a config reload would cut every open stream",
        f"cat {_live_caddyfile(env)}")


def test_caddy_guards_flower_with_basic_auth(caddy, env, server):
    handlers = _site(caddy, env.domains.flower, server)
    users = caddy_facts.basic_auth_users(handlers)
    assert caddy_facts.has_basic_auth(handlers) and users == [env.flower_user], problem(
        f"{env.domains.flower}: the running Caddy config has "
        + (f"basic auth for {listing(users)}, not {env.flower_user}" if users else "no basic auth"),
        f"cat {_live_caddyfile(env)}")


def test_caddy_logs_drop_credentials(caddy, env, server):
    """Caddy's logs carry a request's headers (reverse_proxy's warning for a dropped SSE stream, the
    error log): every log's encoder must be the filter that deletes each credential field."""
    logs = ((caddy.config.get("logging") or {}).get("logs") or {"default": {}})
    problems = []
    for name, log in sorted(logs.items()):
        encoder = log.get("encoder") or {}
        kept = [f for f in render.CADDY_LOG_DROPPED
                if ((encoder.get("fields") or {}).get(f) or {}).get("filter") != "delete"]
        if encoder.get("format") != "filter" or kept:
            problems.append(f"log {name!r} writes {listing(kept) if encoder.get('format') == 'filter' else 'every field'}")
    assert not problems, problem(
        f"Caddy's running config may log credentials: {'; '.join(problems)} (the Caddyfile's global "
        "`log { format filter { ... delete } }`)",
        server.compose_hint("exec", "caddy", "wget", "-qO-", "http://127.0.0.1:2019/config/logging"))


def test_live_caddyfile_is_the_release_caddyfile(release, manifest, env):
    want = manifest.get("files", {}).get("Caddyfile")
    got = release.live_caddyfile_sha256
    assert want and got == want, problem(
        f"{_live_caddyfile(env)} (what Caddy loads) differs from release {manifest.get('release')}'s "
        "Caddyfile: edited by hand, or the deploy did not install it",
        f"diff {Layout(env.remote_dir).current}/Caddyfile {_live_caddyfile(env)}")


# -- Server-Sent Events through Caddy -------------------------------------------------------------------


def _heartbeat_env(docker, service):
    c = docker.one(service)
    return None if c is None else c.env.get("SSE_HEARTBEAT_SECONDS")


def test_sse_heartbeat_matches_inventory(docker, env, server):
    got = _heartbeat_env(docker, "api")
    want = env.sse.heartbeat.seconds
    assert got is not None and float(got) == want, problem(
        f"the api container runs with SSE_HEARTBEAT_SECONDS={got}, the inventory's sse.heartbeat is {want:g}s",
        server.compose_hint("exec", "api", "printenv", "SSE_HEARTBEAT_SECONDS"))


def test_sse_heartbeat_shorter_than_caddy_read_timeout(docker, caddy, env, server):
    got = _heartbeat_env(docker, "api")
    proxy = _api_proxy(caddy, env, server)
    timeout = caddy_facts.duration_seconds((proxy.get("transport") or {}).get("read_timeout"))
    if got is None or timeout is None:
        pytest.fail(problem(f"heartbeat ({got}) or Caddy read_timeout ({timeout}) unknown"))
    assert float(got) < timeout, problem(
        f"the API's heartbeat ({float(got):g}s) is not shorter than Caddy's read_timeout ({timeout:g}s): "
        "Caddy cuts every quiet SSE stream", f"cat {_live_caddyfile(env)}")


def _sse_where(sse, env):
    return f"https://{env.domains.api}{sse.path[:17]}..."


def test_sse_stream_stays_open_past_two_heartbeats(sse, env, server):
    where = _sse_where(sse, env)
    api_logs = server.compose_hint("logs", "--tail", "50", "api")
    assert sse.status == 200, problem(f"{where} answered {sse.status}: {sse.body[:120]!r}", api_logs)
    assert sse.content_type.startswith("text/event-stream"), problem(
        f"{where} is served as {sse.content_type!r}, not text/event-stream", api_logs)
    assert sse.connected_at is not None, problem(f"{where}: no `: connected` line ({sse.error or 'stream ended'})",
                                                 api_logs)
    assert len(sse.keepalives) >= 2, problem(
        f"{where}: the stream " + (f"was closed after {sse.closed_at:.1f}s" if sse.closed_at is not None
                                   else f"stalled ({sse.error})")
        + f" with {len(sse.keepalives)} heartbeat(s) of {sse.heartbeat:g}s: a proxy timeout (Caddy's "
        "read_timeout) or buffering cuts quiet streams", _caddy_logs(server))


def test_sse_delivers_event_published_by_celery_task(sse, probe, env, server):
    where = _sse_where(sse, env)
    if len(sse.keepalives) < 2:
        pytest.fail(problem(f"{where}: the stream did not live two heartbeats, so no task was sent "
                            "(see test_sse_stream_stays_open_past_two_heartbeats)"))
    assert sse.trigger_error is None, problem(f"could not send app.tasks.record_run: {sse.trigger_error}",
                                              server.compose_hint("logs", "--tail", "50", "worker"))
    record = probe.wait("record_run", timeout=2) or {}
    assert sse.event is not None, problem(
        f"{where}: no event within {env.smoke.task_roundtrip.seconds:g}s of sending app.tasks.record_run"
        + (f" (the task: {record.get('error') or record.get('result')})" if record else ""),
        server.compose_hint("logs", "--tail", "50", "worker", "api"))
