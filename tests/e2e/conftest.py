"""End-to-end fixtures: the simulated VPS with the current sources deployed. It is brought up
and deployed when missing; an e2e test never skips for want of it."""

from __future__ import annotations

import os

import pytest

from tests.e2e.live import Live


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: deploys to the simulated VPS (brought up when missing)")


@pytest.fixture(scope="session")
def vps_session():
    """The `local` environment's VPS as a `Live`, not yet brought up (see `live`)."""
    vps = Live(os.environ.get("OPSKIT_INVENTORY"))
    yield vps
    vps.close()


@pytest.fixture(scope="session")
def live(vps_session):
    """The VPS with the current sources deployed: brought up, and deployed, when it is not (a
    no-op deploy when it is). OPSKIT_INVENTORY points the e2e tier at another inventory."""
    return vps_session.ensure()
