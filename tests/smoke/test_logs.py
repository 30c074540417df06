"""The logs of the running containers are free of the lines that past incidents left behind, and
of every secret value of the environment (compared by hashes, on the server: secret_scan)."""

from __future__ import annotations

import pytest

from opskit import smoke
from opskit.facts.logs import SIGNATURES

from . import secret_scan
from .checks import listing, problem

pytestmark = pytest.mark.logs

#: lines read from the end of each container's log: what one deploy and smoke run write, and more
SECRET_SCAN_TAIL = 5000


@pytest.mark.parametrize("signature", SIGNATURES, ids=[s.key for s in SIGNATURES])
def test_logs_free_of_incident(signature, log_hits, server):
    hits = [h for h in log_hits if h.signature == signature.key]
    services = sorted({h.service for h in hits})
    first = hits[0] if hits else None
    assert not hits, problem(
        f"{len(hits)} line(s) with {signature.text!r} in the logs of {', '.join(services)}: {signature.incident}. "
        f"First: {first.line[:160]!r}",
        f"{server.compose_hint('logs', '--timestamps', *services)} | grep -F {signature.text!r}")


@pytest.fixture(scope="session")
def log_secrets(remote, env):
    return secret_scan.scan(remote, env, [secret_scan.logs(env.project, SECRET_SCAN_TAIL)])


def test_logs_free_of_secrets(service, log_secrets, server, layout, env):
    assert log_secrets.counts["sources"] > 0, problem("the secret scan found no container log to read")
    known = smoke.expected_services(env)
    # a container of a service the release does not have counts as the first service's
    hits = [h for h in log_secrets.hits if h.service == service or (service == known[0] and h.service not in known)]
    names = sorted({h.secret for h in hits})
    containers = sorted({h.container for h in hits})
    # the hint counts the lines with each plain value; it never shows one
    grep = "; ".join(f"docker logs {c} 2>&1 | grep -c -F -f {layout.secrets}/{n}"
                     for c in containers for n in names if n != "flower_password")
    assert not hits, problem(
        f"the log of {listing(containers)} holds the value of secret(s) {listing(names)} "
        f"({listing(sorted({h.form for h in hits}))}): whatever wrote it logs credentials; fix that, "
        "then rotate the secret(s)", grep or server.compose_hint("logs", service))
