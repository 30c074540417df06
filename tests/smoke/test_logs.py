"""The logs of the running containers are free of the lines that past incidents left behind."""

from __future__ import annotations

import pytest

from opskit.facts.logs import SIGNATURES

from .checks import problem

pytestmark = pytest.mark.logs


@pytest.mark.parametrize("signature", SIGNATURES, ids=[s.key for s in SIGNATURES])
def test_logs_free_of_incident(signature, log_hits, server):
    hits = [h for h in log_hits if h.signature == signature.key]
    services = sorted({h.service for h in hits})
    first = hits[0] if hits else None
    assert not hits, problem(
        f"{len(hits)} line(s) with {signature.text!r} in the logs of {', '.join(services)}: {signature.incident}. "
        f"First: {first.line[:160]!r}",
        f"{server.compose_hint('logs', '--timestamps', *services)} | grep -F {signature.text!r}")
