"""Automatic TLS on the simulated VPS, for real: an environment with `tls.mode: acme` gets
certificates for its three domains from Pebble (Let's Encrypt's test CA, beside the VPS on its
network: `opskit.sim.acme_ca`), serves them with HSTS, and its whole smoke suite passes with
nothing skipped, the ACME-only checks included (the backup checks aside: it has no `backup:`). A challenge that fails (a domain that resolves
elsewhere) is reported by the smoke suite and by `invoke status`, each naming the domain and
Caddy's reason, and the report clears once the domain resolves to the server again.

The environment is `local` with other domains and `tls:` (an inventory copy): the same VPS, the
same secrets. The smoke suite trusts Pebble's issuing root as a browser trusts Let's Encrypt's:
through OpenSSL's default store (SSL_CERT_FILE). The module deploys `local` back when it ends.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from opskit import ROOT, facts
from opskit.facts import acme
from opskit.sim import acme_ca
from opskit.sim.secrets import load as load_with_secrets
from opskit.sim.vps_config import VpsConfig
from tests.e2e.live import inventory_copy
from tests.e2e.test_smoke_catches import assert_caught, assert_no_secret_leaked, assert_passed, run_smoke
from tests.smoke.web import Web

pytestmark = pytest.mark.e2e

DOMAINS = {"app": "app.opskit.test", "api": "api.opskit.test", "flower": "flower.opskit.test"}
#: Pebble validates at once (the kit image sets PEBBLE_VA_NOSLEEP): seconds, never this long
ISSUANCE_LIMIT_S = 120
ACME_CHECKS = ("test_acme_certificate_obtained", "test_hsts_enabled")


@dataclass
class AcmeSite:
    env: object
    inventory: Path
    ca: acme_ca.AcmeCa
    vps_address: str
    roots: Path

    @property
    def environ(self) -> dict:
        return {"OPSKIT_INVENTORY": str(self.inventory), "SSL_CERT_FILE": str(self.roots)}


def _since(text: str, since: float) -> str:
    """The log lines written at `since` (time.time()) or later: a restart keeps a container's log."""
    return "\n".join(line for line in text.splitlines()
                     if any(float(e.get("ts", 0)) >= since for e in acme.log_entries(line)))


def _caddy_log_until(live, project: str, done, what: str, since: float):
    deadline = time.monotonic() + ISSUANCE_LIMIT_S
    while True:
        text = _since(facts.read(live.remote, acme.log(project)), since)  # one read: both outcomes
        found = acme.certificates_obtained(text), acme.certificate_failures(text)
        if result := done(*found):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {ISSUANCE_LIMIT_S}s; obtained {found[0]}, failing {found[1]}\n"
                                 + live.out(live.compose("logs", "--tail", "40", "caddy"), check=False)[-4000:])
        time.sleep(1)


def _restart_caddy(live, forget: str | None = None) -> None:
    """A restart, not a reload: a failed attempt's retry (a minute or more away) must not hold the
    domain, and a restart empties Caddy's certificate cache. `forget`: the domains (a shell pattern)
    whose stored certificates go first, so that Caddy asks for them again."""
    caddy = live.container("caddy")
    if forget:
        live.run(["docker", "exec", caddy, "sh", "-c", f"rm -rf /data/caddy/certificates/*/{forget}"])
    live.run(["docker", "restart", caddy], timeout=120)
    live.wait_healthy()


@pytest.fixture(scope="module")
def site(live, tmp_path_factory):
    folder = tmp_path_factory.mktemp("acme")
    ca = acme_ca.up()
    try:
        tls_ca = folder / "pebble-tls-ca.pem"
        tls_ca.write_text(ca.tls_ca_pem)

        def edit(raw):
            env = copy.deepcopy(raw["environments"]["local"])
            env["domains"] = dict(DOMAINS)
            env["tls"] = {"mode": "acme", "email": "ops@opskit.test", "acme_ca": acme_ca.DIRECTORY,
                          "acme_ca_root": str(tls_ca)}
            raw["environments"]["acme"] = env

        path = inventory_copy(folder, edit)
        env = load_with_secrets("acme", path=path)
        address = acme_ca.vps_address(VpsConfig.from_environment(env))
        for domain in DOMAINS.values():
            ca.point(domain, address)
        # certificates an earlier run got are worthless: each start of Pebble makes a new root
        since = time.time()
        _restart_caddy(live, forget="*.opskit.test")
        started = time.monotonic()
        live.deploy(env)
        _caddy_log_until(live, env.project, lambda got, failing: set(DOMAINS.values()) <= set(got),
                         f"no certificate for all of {sorted(DOMAINS.values())}", since)
        print(f"\nacme environment deployed and its three certificates obtained in {time.monotonic() - started:.0f}s")
        roots = folder / "pebble-roots.pem"
        roots.write_text(ca.issuing_roots())
        yield AcmeSite(env, path, ca, address, roots)
    finally:
        try:
            live.deploy(live.env)  # the e2e tier after this module expects `local`
        finally:
            acme_ca.down()


def test_pebble_certificates_are_served_for_the_three_domains(site, live):
    web = Web("127.0.0.1", site.env.vps.http_port, site.env.vps.https_port, root_pem=site.roots.read_text())
    other = Web("127.0.0.1", site.env.vps.http_port, site.env.vps.https_port, root_pem=site.ca.tls_ca_pem)
    for name, domain in DOMAINS.items():
        answer = web.request(domain, "/")
        issuer = dict(x[0] for x in answer.certificate["issuer"])
        assert issuer.get("commonName", "").startswith("Pebble Intermediate CA"), answer.certificate
        assert [v for k, v in answer.certificate["subjectAltName"]] == [domain]
        assert answer.headers.get("strict-transport-security", "").startswith("max-age="), answer.headers
        with pytest.raises(OSError):  # the chain verifies to Pebble's issuing root only
            other.request(domain, "/")


def test_the_whole_smoke_suite_passes_with_no_check_skipped(site, tmp_path):
    # all but the backup checks: this environment has no `backup:` (test_backups.py runs the whole
    # suite on one that has, its backup checks included)
    run = run_smoke(tmp_path, "-m", "not backups", env_name="acme", environ=site.environ)
    assert run.returncode == 0, run.explain()
    skipped = {n: c.message.strip()[:200] for n, c in run.cases.items() if c.outcome == "skipped"}
    assert not skipped, f"skipped in an ACME environment: {skipped}"
    for check in ACME_CHECKS:
        ran = [n for n, c in run.cases.items() if n.startswith(check + "[") and c.outcome == "passed"]
        assert len(ran) == len(DOMAINS), f"{check}: passed for {ran}, not for each of {list(DOMAINS.values())}"
    assert_no_secret_leaked(run, site.env)
    print(f"acme smoke suite: {len(run.cases)} checks, none skipped, in {run.seconds:.1f}s")


def _status(site) -> str:
    done = subprocess.run([str(ROOT / "scripts" / "invoke"), "status", "-e", "acme"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **site.environ})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_failing_challenge_is_reported_with_the_domain_and_caddys_reason(site, live, tmp_path):
    flower = DOMAINS["flower"]
    elsewhere = acme_ca.network_address(acme_ca.DNS)  # a host of the network that serves no 80 or 443
    try:
        site.ca.point(flower, elsewhere)
        since = time.time()
        _restart_caddy(live, forget=flower)
        failing = _caddy_log_until(live, site.env.project, lambda got, failing: failing.get(flower) and failing,
                                   f"no failed attempt for {flower} in Caddy's log", since)
        assert list(failing) == [flower], failing
        reason = failing[flower]
        assert "urn:ietf:params:acme:error" in reason and elsewhere in reason, reason

        run = run_smoke(tmp_path, "-k", "test_acme_certificate_obtained", env_name="acme", environ=site.environ)
        assert_caught(run, f"test_acme_certificate_obtained[{flower}]", flower, reason)
        assert [n for n in run.failed()] == [f"test_acme_certificate_obtained[{flower}]"], run.explain()
        assert_no_secret_leaked(run, site.env)

        shown = _status(site)
        assert f"  {flower}: {reason}" in shown, shown
        assert DOMAINS["app"] not in shown and DOMAINS["api"] not in shown, shown
    finally:
        site.ca.point(flower, site.vps_address)
        since = time.time()
        _restart_caddy(live)
    _caddy_log_until(live, site.env.project, lambda got, failing: flower in got and not failing,
                     f"no certificate for {flower} once it resolves to the server again", since)
    run = run_smoke(tmp_path, "-k", "test_acme_certificate_obtained or test_https_certificate_matches_domain",
                    env_name="acme", environ=site.environ)
    assert_passed(run, *(f"test_acme_certificate_obtained[{d}]" for d in DOMAINS.values()),
                  f"test_https_certificate_matches_domain[{flower}]")
    assert "certificates: no failed ACME attempt in Caddy's log" in _status(site)
