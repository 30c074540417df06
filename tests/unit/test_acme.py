"""ACME beyond Let's Encrypt's default: the inventory's `tls.acme_ca` and `tls.acme_ca_root`, their
place in the Caddyfile, and the reader of Caddy's log that names each domain it cannot certify
(real Pebble runs: tests/integration/test_acme_pebble.py)."""

from __future__ import annotations

import base64
import json
import subprocess

import pytest

from opskit import render
from opskit.errors import InventoryError
from opskit.facts import acme
from opskit.facts.base import Output
from tests.caddyfile import parse

# a syntactically whole certificate (DER starts with a SEQUENCE); no TLS library reads it here
DER = b"\x30\x82\x01\x0a" + bytes(range(256))[:200]
B64 = base64.b64encode(DER).decode()
PEM = "-----BEGIN CERTIFICATE-----\n" + "\n".join(B64[i:i + 64] for i in range(0, len(B64), 64)) + "\n-----END CERTIFICATE-----\n"
PEBBLE = "https://pebble:14000/dir"


def problems_of(make_env, edit) -> list[str]:
    with pytest.raises(InventoryError) as info:
        make_env("production", edit)
    return info.value.problems


def with_tls(**tls):
    def edit(raw):
        raw["environments"]["production"]["tls"] = {"mode": "acme", "email": "ops@example.com", **tls}
    return edit


@pytest.fixture
def root_file(tmp_path):
    path = tmp_path / "pebble-ca.pem"
    path.write_text("subject=CN = test CA\r\n" + PEM.replace("\n", "\r\n"))
    return path


def test_a_custom_directory_and_its_root_are_read_and_normalized(make_env, root_file):
    env = make_env("production", with_tls(acme_ca=PEBBLE, acme_ca_root=str(root_file)))
    assert env.tls.acme_ca == PEBBLE and env.tls.acme_ca_root == root_file
    # the certificate only, with \n line ends: the file Caddy gets holds nothing else
    assert env.tls.acme_ca_root_pem == PEM


def test_without_them_caddy_keeps_its_default_ca_and_trust(make_env):
    env = make_env("production")
    assert (env.tls.acme_ca, env.tls.acme_ca_root, env.tls.acme_ca_root_pem) == (None, None, None)
    options = parse(render.caddyfile(env).decode()).children[0]
    assert not [c for c in options.children if c.name.startswith("acme_ca")]


def test_the_caddyfile_names_the_directory_and_the_root_in_the_global_options(make_env, root_file):
    env = make_env("production", with_tls(acme_ca=PEBBLE, acme_ca_root=str(root_file)))
    options = parse(render.caddyfile(env).decode()).children[0]
    assert options.words == [] and options.children[0].words == ["email", "ops@example.com"]
    got = {c.name: c.words[1:] for c in options.children}
    assert got["acme_ca"] == [PEBBLE]
    # a path inside the container: Caddy reads the root from a file (the release's, beside the Caddyfile)
    assert got["acme_ca_root"] == [f"/etc/caddy/{render.ACME_CA_ROOT_FILE}"]


def test_a_directory_without_a_root_trusts_the_system(make_env):
    env = make_env("production", with_tls(acme_ca="https://acme-staging-v02.api.letsencrypt.org/directory"))
    text = render.caddyfile(env).decode()
    assert "acme_ca https://acme-staging-v02.api.letsencrypt.org/directory\n" in text
    assert "acme_ca_root" not in text


@pytest.mark.parametrize("value", [
    "http://pebble:14000/dir",  # ACME runs over HTTPS only
    "https://pebble:14000/dir\n\tlocal_certs",  # a second global option
    'https://pebble:14000/dir"',
    "https://pebble:14000/dir {",
    "https://pebble:14000/{env.CA}",  # a Caddy placeholder
    "https://pebble:14000/dir#x",
    "https://pebble:14000/dir?x=1",
    "https://pebble 14000/dir",
    "pebble:14000/dir",
    14000,
])
def test_a_directory_that_is_not_one_https_token_is_refused_with_its_key_path(make_env, value):
    problems = problems_of(make_env, with_tls(acme_ca=value))
    assert len(problems) == 1
    assert problems[0].startswith("environments.production.tls.acme_ca: ")
    assert "is not an ACME directory URL (expected https://host[:port]/path" in problems[0]


KEY_MARKER = "PRIVATE " + "KEY-----"  # in parts: no private-key block in the repository's text


@pytest.mark.parametrize("content, reason", [
    ("not a certificate\n", "holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)"),
    (PEM + f"-----BEGIN {KEY_MARKER}\nAAAA\n-----END {KEY_MARKER}\n", "holds a private key: give the CA's certificate only (it is shipped as a public file)"),
    ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "certificate 1 is not valid base64"),
    ("-----BEGIN CERTIFICATE-----\nQUJD\n-----END CERTIFICATE-----\n", "certificate 1 is not a DER certificate"),
])
def test_a_root_file_that_is_not_certificates_is_refused(make_env, tmp_path, content, reason):
    path = tmp_path / "root.pem"
    path.write_text(content)
    problems = problems_of(make_env, with_tls(acme_ca=PEBBLE, acme_ca_root=str(path)))
    assert problems == [f"environments.production.tls.acme_ca_root: {path} {reason}"]


def test_a_missing_root_file_is_named(make_env, tmp_path):
    missing = tmp_path / "none.pem"
    problems = problems_of(make_env, with_tls(acme_ca=PEBBLE, acme_ca_root=str(missing)))
    assert problems == [f"environments.production.tls.acme_ca_root: cannot read {missing}: No such file or directory"]


def test_the_acme_keys_mean_nothing_to_caddys_local_ca(make_env, root_file):
    def edit(raw):
        raw["environments"]["production"]["tls"] = {"mode": "internal", "acme_ca": PEBBLE,
                                                    "acme_ca_root": str(root_file)}
    assert problems_of(make_env, edit) == [
        f"environments.production.tls.{key}: only for tls.mode acme (Caddy's local CA asks no ACME server)"
        for key in ("acme_ca", "acme_ca_root")]


# -- Caddy's log ------------------------------------------------------------------------------------

def line(logger: str, msg: str, **fields) -> str:
    return json.dumps({"level": "info", "ts": 1.0, "logger": logger, "msg": msg, **fields})


# as Caddy 2.11 wrote them in tests/integration/test_acme_pebble.py (addresses and tokens shortened)
REFUSED = ('HTTP 400 urn:ietf:params:acme:error:connection - Get "http://flower.acme.test:80/.well-known/'
           'acme-challenge/d1qM": dial tcp 172.25.0.2:80: connect: connection refused')
FAILED = line("tls.obtain", "could not get certificate from issuer", identifier="flower.acme.test",
              issuer="pebble:14000-dir", error=REFUSED)
RETRY = line("tls.obtain", "will retry", error=f"[flower.acme.test] Obtain: {REFUSED}", attempt=1, retrying_in=60)
CHALLENGE = line("http.acme_client", "challenge failed", identifier="flower.acme.test", challenge_type="http-01",
                 problem={"type": "urn:ietf:params:acme:error:connection", "detail": "dial tcp"})
OBTAINED = {d: line("tls.obtain", "certificate obtained successfully", identifier=d, issuer="pebble:14000-dir")
            for d in ("app.acme.test", "api.acme.test", "flower.acme.test")}


def test_a_failed_domain_is_reported_with_the_cas_answer():
    log = "\n".join([OBTAINED["app.acme.test"], CHALLENGE, FAILED, RETRY, OBTAINED["api.acme.test"]])
    assert acme.certificate_failures(log) == {"flower.acme.test": REFUSED}
    assert acme.certificates_obtained(log) == ["api.acme.test", "app.acme.test"]


def test_a_later_success_clears_the_failure_and_a_later_failure_brings_it_back():
    assert acme.certificate_failures("\n".join([FAILED, RETRY, OBTAINED["flower.acme.test"]])) == {}
    renewal_failed = line("tls.renew", "could not get certificate from issuer", identifier="flower.acme.test",
                          error="HTTP 429 rate limited")
    log = "\n".join([OBTAINED["flower.acme.test"], renewal_failed])
    assert acme.certificate_failures(log) == {"flower.acme.test": "HTTP 429 rate limited"}
    renewed = line("tls.renew", "certificate renewed successfully", identifier="flower.acme.test")
    assert acme.certificate_failures(log + "\n" + renewed) == {}


def test_the_log_may_be_prefixed_run_together_or_mixed_with_other_text():
    log = "\n".join([
        f"2026-12-01T03:24:08.123Z {FAILED}",  # docker logs --timestamps
        "caddy: not JSON {at all",
        OBTAINED["app.acme.test"] + OBTAINED["api.acme.test"],  # stdout and stderr met mid-line
        '{"msg": "could not get certificate from issuer", "identifier": 7, "logger": "tls.obtain"}',
        '["a", "list"]',
    ])
    assert acme.certificate_failures(log) == {"flower.acme.test": REFUSED}
    assert acme.certificates_obtained(log) == ["api.acme.test", "app.acme.test"]


def test_messages_of_other_loggers_name_no_failure():
    other = line("http.log.error", "could not get certificate from issuer", identifier="x.example.com")
    assert acme.certificate_failures(f"{other}\n{CHALLENGE}") == {}


def test_the_server_side_fact_reads_only_the_caddy_services_certificate_lines():
    fact = acme.failures("jobagent")
    assert fact.argv[:2] == ("sh", "-c") and fact.name == "acme"
    assert fact.argv[-6:] == ("--filter", "label=com.docker.compose.project=jobagent",
                              "--filter", "label=com.docker.compose.service=caddy",
                              "--filter", "label=com.docker.compose.oneoff=False")
    assert subprocess.run(["sh", "-n", "-c", fact.argv[2]], check=False).returncode == 0
    assert fact.parse(Output(FAILED + "\n")) == {"flower.acme.test": REFUSED}
