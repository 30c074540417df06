"""Automatic TLS for real: the rendered Caddyfile of a `tls.mode: acme` environment, in the kit's
Caddy container, gets certificates from Pebble (Let's Encrypt's test CA) over HTTP-01 and over
TLS-ALPN-01, and a client container checks what Caddy serves. A domain that resolves elsewhere
shows up, with Caddy's reason, in `opskit.facts.acme.certificate_failures` of Caddy's own log.

Everything runs on a Docker network of this module's own (`tracke-acme-*`): challtestsrv answers
Pebble's DNS look-ups with the A records the test sets; all traffic stays between these containers
(the test reaches them only through `docker exec`).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from opskit import ROOT, render
from opskit.facts import acme
from opskit.facts.base import Output
from opskit.layout import ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL
from opskit.render import ACME_CA_ROOT_FILE
from opskit.runner import Runner
from opskit.sim import kit, kit_plan

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine")]

#: the kit images this module runs; only these are built (the others may be mid-change elsewhere)
NEEDED = ("base", "python", "caddy", "pebble")
HSTS = "max-age=31536000; includeSubDomains"
#: Pebble validates at once (PEBBLE_VA_NOSLEEP): an issuance takes seconds, never this long
ISSUANCE_LIMIT_S = 90
TIMES: dict[str, float] = {}


def docker(*argv: str, check: bool = True, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=timeout, input=stdin,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def ip_of(container: str) -> str:
    return docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container).stdout.strip()


@pytest.fixture(scope="module")
def tags() -> dict[str, str]:
    """The kit images this module needs, built now when missing or stale (seconds when up to date)."""
    mirror, security = kit.mirrors()
    facts = kit.gather_facts()
    decisions = [d for d in kit_plan.decide(facts, False, mirror, security) if d.image.name in NEEDED]
    Runner().run(kit_plan.plan_decisions(facts, decisions, mirror, security, False, ROOT))
    return {name: kit_plan.TAGS[name] for name in NEEDED}


class Lab:
    """The module's network: challtestsrv, Pebble, an upstream for Caddy, and a client to probe from."""

    def __init__(self, tags: dict[str, str]):
        self.tags = tags
        self.prefix = f"tracke-acme-{uuid.uuid4().hex[:8]}"
        self.network = self.prefix
        self.containers: list[str] = []

    def run(self, name: str, image: str, *command: str, alias: str | None = None, options: tuple = ()) -> str:
        container = f"{self.prefix}-{name}"
        self.containers.append(container)
        docker("run", "-d", "--name", container, "--network", self.network,
               *(("--network-alias", alias) if alias else ()), *options, image, *command)
        return container

    def start(self) -> Lab:
        docker("network", "create", self.network)
        pebble = self.tags["pebble"]
        # no default answer: a name the test did not set is unresolvable, never 127.0.0.1 or ::1
        self.challtestsrv = self.run("challtestsrv", pebble, "pebble-challtestsrv", "-defaultIPv4", "",
                                     "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", "",
                                     alias="challtestsrv")
        self.pebble = self.run("pebble", pebble, alias="pebble")
        # the stand-in for the api, frontend and Flower: the kit Caddy's default page on :80
        self.upstream = self.run("upstream", self.tags["caddy"], alias="upstream")
        self.client = self.run("client", self.tags["python"], "sleep", "infinity")
        # the CA of Pebble's own HTTPS (made at image build): Caddy's acme_ca_root, the client's trust
        self.pebble_tls_ca = docker("exec", self.pebble, "cat", "/etc/pebble/tls/ca.pem").stdout
        self.python("""
            import ssl, time, urllib.request
            ctx = ssl.create_default_context(cafile="/tmp/pebble-tls-ca.pem")
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen("https://pebble:14000/dir", context=ctx, timeout=5).read()
                    urllib.request.urlopen("http://challtestsrv:8055/", timeout=5)
                    break
                except urllib.error.HTTPError:
                    break  # challtestsrv answers 404 on /: it is up
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        """, files={"/tmp/pebble-tls-ca.pem": self.pebble_tls_ca})
        return self

    def python(self, code: str, *args: str, files: dict[str, str] | None = None) -> str:
        """Run `code` in the client container (after writing `files` there); its stdout."""
        for path, text in (files or {}).items():
            docker("exec", "-i", self.client, "sh", "-c", f"cat > {path}", stdin=text)
        return docker("exec", self.client, "python3", "-c", textwrap.dedent(code), *args, timeout=180).stdout

    def set_a(self, host: str, address: str) -> None:
        self.python("""
            import json, sys, urllib.request
            # add-a adds to what the name had: clear it first, so the name has this one address
            for path, body in (("clear-a", {"host": sys.argv[1]}),
                               ("add-a", {"host": sys.argv[1], "addresses": [sys.argv[2]]})):
                request = urllib.request.Request(f"http://challtestsrv:8055/{path}", data=json.dumps(body).encode())
                urllib.request.urlopen(request, timeout=10)
        """, host, address)

    def stop(self) -> None:
        for container in reversed(self.containers):
            docker("rm", "-f", "-v", container, check=False)
        docker("network", "rm", self.network, check=False)


@pytest.fixture(scope="module")
def lab(tags):
    lab = Lab(tags)
    try:
        yield lab.start()
    finally:
        lab.stop()
        print("\nACME issuance times (s): " + ", ".join(f"{k}: {v:.1f}" for k, v in TIMES.items()))


@pytest.fixture
def acme_env(make_env, tmp_path, lab):
    """A production environment of the real inventory, its three domains under `case`, pointed at Pebble."""

    def make(case: str):
        root = tmp_path / "pebble-tls-ca.pem"
        root.write_text(lab.pebble_tls_ca)

        def edit(raw):
            prod = raw["environments"]["production"]
            prod["domains"] = {k: f"{k}.{case}.acme.test" for k in ("app", "api", "flower")}
            prod["tls"] = {"mode": "acme", "email": "ops@acme.test", "acme_ca": "https://pebble:14000/dir",
                           "acme_ca_root": str(root)}

        return make_env("production", edit)

    return make


class CaddySite:
    """The kit's Caddy with a folder mounted at /etc/caddy as on the server: the rendered Caddyfile
    and the release's acme_ca_root.pem beside it."""

    def __init__(self, lab: Lab, folder: Path, name: str):
        self.lab, self.folder = lab, folder
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)  # the image's user reads it, whoever that is
        self.write("Caddyfile", "{\n\tadmin localhost:2019\n}\n")  # no site yet: nothing to obtain
        # labelled as Compose labels the project's caddy service: the server-side fact finds it so
        labels = ("--label", f"{PROJECT_LABEL}={lab.prefix}-{name}", "--label", f"{SERVICE_LABEL}=caddy",
                  "--label", f"{ONEOFF_LABEL}=False")
        self.project = f"{lab.prefix}-{name}"
        self.container = lab.run(name, lab.tags["caddy"], options=("-v", f"{folder}:/etc/caddy:ro", *labels))
        self.ip = ip_of(self.container)
        self.wait_admin()

    def wait_admin(self) -> None:
        """`caddy reload` talks to the admin API, which answers a moment after the container starts."""
        deadline = time.monotonic() + 30
        while docker("exec", self.container, "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:2019/config/",
                     check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"Caddy's admin API did not answer within 30 s:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def write(self, name: str, text: str | bytes) -> None:
        path = self.folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        path.chmod(0o644)

    def serve(self, env, challenge_off: str, extra: tuple = ()) -> float:
        """Load the environment's Caddyfile (one challenge type switched off, `extra` global options
        added); when the reload began (time.monotonic)."""
        self.write(ACME_CA_ROOT_FILE, env.tls.acme_ca_root_pem)
        self.write("Caddyfile", render.caddyfile(
            env, upstreams={name: "upstream:80" for name in ("api", "flower", "frontend")},
            global_options=(f"cert_issuer acme {{\n\t\t{challenge_off}\n\t}}", *extra)))
        started = time.monotonic()
        docker("exec", self.container, "caddy", "reload", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile")
        return started

    def log(self) -> str:
        done = docker("logs", self.container)
        return done.stdout + done.stderr

    def wait(self, done, what: str):
        deadline = time.monotonic() + ISSUANCE_LIMIT_S
        while time.monotonic() < deadline:
            result = done(self.log())
            if result:
                return result
            time.sleep(0.25)
        raise AssertionError(f"{what} within {ISSUANCE_LIMIT_S} s; Caddy's log:\n{self.log()[-6000:]}")


def challenges_tried(log: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for entry in acme.log_entries(log):
        if entry.get("msg") == "trying to solve challenge":
            out.setdefault(entry["identifier"], set()).add(entry["challenge_type"])
    return out


PROBE = """
    import json, socket, ssl, sys, urllib.request
    caddy, domains = sys.argv[1], sys.argv[2:]
    pebble_tls = ssl.create_default_context(cafile="/tmp/pebble-tls-ca.pem")
    # the root Pebble signs certificates with: new at each start of Pebble, so read from it
    root = urllib.request.urlopen("https://pebble:15000/roots/0", context=pebble_tls, timeout=10).read().decode()

    def fetch(domain, ctx):
        with socket.create_connection((caddy, 443), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=domain) as tls:
                tls.sendall(f"GET / HTTP/1.1\\r\\nHost: {domain}\\r\\nConnection: close\\r\\n\\r\\n".encode())
                data = b""
                while chunk := tls.recv(65536):
                    data += chunk
                return tls.getpeercert(), data.split(b"\\r\\n\\r\\n", 1)[0].decode()

    out = {}
    for domain in domains:
        try:
            cert, head = fetch(domain, ssl.create_default_context(cadata=root))
        except (OSError, ssl.SSLError) as exc:
            out[domain] = {"error": repr(exc)}
            continue
        lines = head.split("\\r\\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        try:
            fetch(domain, ssl.create_default_context(cafile="/tmp/pebble-tls-ca.pem"))
            other_root = "trusted"
        except ssl.SSLCertVerificationError as exc:
            other_root = exc.verify_message
        out[domain] = {"status": lines[0], "hsts": headers.get("strict-transport-security"),
                       "issuer": dict(x[0] for x in cert["issuer"]).get("commonName"),
                       "san": [v for k, v in cert["subjectAltName"]], "other_root": other_root,
                       "serial": cert["serialNumber"], "not_before": cert["notBefore"], "not_after": cert["notAfter"]}
    print(json.dumps(out))
"""


def probe(lab: Lab, site: CaddySite, domains: list[str]) -> dict:
    return json.loads(lab.python(PROBE, site.ip, *domains, files={"/tmp/pebble-tls-ca.pem": lab.pebble_tls_ca}))


@pytest.mark.parametrize("challenge, challenge_off", [("http-01", "disable_tlsalpn_challenge"),
                                                      ("tls-alpn-01", "disable_http_challenge")])
def test_caddy_gets_and_serves_pebble_certificates_for_the_three_sites(lab, acme_env, tmp_path, challenge,
                                                                       challenge_off):
    env = acme_env(challenge.replace("-", ""))
    domains = [name for _, name in env.domains.items()]
    site = CaddySite(lab, tmp_path / "etc-caddy", f"caddy-{challenge}")
    for domain in domains:
        lab.set_a(domain, site.ip)
    started = site.serve(env, challenge_off)

    obtained = site.wait(lambda log: set(domains) <= set(acme.certificates_obtained(log)),
                         f"no certificate for all of {domains}")
    TIMES[f"{challenge} (3 domains)"] = time.monotonic() - started
    log = site.log()
    assert acme.certificate_failures(log) == {}
    # the challenge that was left on is the one that proved each domain
    assert challenges_tried(log) == {domain: {challenge} for domain in domains}, obtained

    served = probe(lab, site, domains)
    for site_name, domain in env.domains.items():
        got = served[domain]
        assert "error" not in got, got
        # Flower's site asks for its password first
        assert got["status"].startswith("HTTP/1.1 401" if site_name == "flower" else "HTTP/1.1 200"), got
        assert got["hsts"] == HSTS, got
        assert got["san"] == [domain] and got["issuer"].startswith("Pebble Intermediate CA"), got
        # the chain verifies to Pebble's ACME root only: trusting another CA does not do
        assert got["other_root"] != "trusted", got


def test_a_domain_that_does_not_resolve_to_caddy_is_reported_with_caddys_reason(lab, acme_env, tmp_path):
    env = acme_env("failing")
    site = CaddySite(lab, tmp_path / "etc-caddy", "caddy-failing")
    lab.set_a(env.domains.app, site.ip)
    lab.set_a(env.domains.api, site.ip)
    elsewhere = ip_of(lab.challtestsrv)  # a container of the network that serves no port 80
    lab.set_a(env.domains.flower, elsewhere)
    started = site.serve(env, "disable_tlsalpn_challenge")

    failures = site.wait(lambda log: acme.certificate_failures(log) if {env.domains.app, env.domains.api} <= set(
        acme.certificates_obtained(log)) else None, f"no failure reported for {env.domains.flower}")
    TIMES["failure in the log"] = time.monotonic() - started
    assert list(failures) == [env.domains.flower]
    reason = failures[env.domains.flower]
    # Caddy's words: the ACME problem, and the address Pebble was sent to
    assert "urn:ietf:params:acme:error:connection" in reason, reason
    assert f"{elsewhere}:80" in reason and "connection refused" in reason, reason
    # the same, read as `invoke status` reads it on a server: the fact's own script, here
    fact = acme.failures(site.project)
    done = subprocess.run(list(fact.argv), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert fact.parse(Output(done.stdout, done.stderr, done.returncode)) == failures

    served = probe(lab, site, [env.domains.flower, env.domains.app])
    assert "error" in served[env.domains.flower]  # no certificate: a TLS alert, which is all a browser says
    assert served[env.domains.app]["hsts"] == HSTS

    # the domain resolved to Caddy again: the next attempt succeeds and the report clears
    lab.set_a(env.domains.flower, site.ip)
    # a restart, not a reload: the failed attempt's retry (60 s away) must not hold the domain
    docker("restart", site.container)
    if ip_of(site.container) != site.ip:  # an address that Docker gave out again differently: follow it
        for domain in (env.domains.app, env.domains.api, env.domains.flower):
            lab.set_a(domain, ip_of(site.container))
    started = time.monotonic()
    site.wait(lambda log: env.domains.flower in acme.certificates_obtained(log),
              f"no certificate for {env.domains.flower} after the fix")
    TIMES["after the fix (restart included)"] = time.monotonic() - started
    assert acme.certificate_failures(site.log()) == {}


def renewed(log: str) -> set[str]:
    return {e["identifier"] for e in acme.log_entries(log)
            if e.get("logger") == "tls.renew" and e.get("msg") == "certificate renewed successfully"}


def test_caddy_renews_its_certificates_from_pebble_and_serves_the_new_ones(lab, acme_env, tmp_path):
    env = acme_env("renewal")
    domains = [name for _, name in env.domains.items()]
    site = CaddySite(lab, tmp_path / "etc-caddy", "caddy-renewal")
    for domain in domains:
        lab.set_a(domain, site.ip)
    # Pebble's certificates live an hour (images/pebble/pebble-config.json), and Caddy renews in the
    # last third of a lifetime, checked every 10 minutes: a window over nearly all the lifetime and a
    # 2 s check make each renewal due at once. Set from the start: a reload keeps the running
    # certificate cache, and with it the check interval it was made with.
    started = site.serve(env, "disable_tlsalpn_challenge", extra=("renewal_window_ratio 0.9999", "renew_interval 2s"))
    site.wait(lambda log: set(domains) <= set(acme.certificates_obtained(log)), f"no certificate for all of {domains}")
    first = probe(lab, site, domains)
    assert all("serial" in first[d] for d in domains), first

    site.wait(lambda log: set(domains) <= renewed(log), f"no renewal of all of {domains}")
    TIMES["obtain and renew (3 domains)"] = time.monotonic() - started
    deadline = time.monotonic() + 20
    while (now := probe(lab, site, domains)) and any(now[d].get("serial") == first[d]["serial"] for d in domains):
        assert time.monotonic() < deadline, f"Caddy still serves the first certificates: {now}"
        time.sleep(0.5)
    for domain in domains:
        assert "error" not in now[domain] and now[domain]["hsts"] == HSTS, now[domain]
        assert now[domain]["san"] == [domain] and now[domain]["issuer"].startswith("Pebble Intermediate CA")
