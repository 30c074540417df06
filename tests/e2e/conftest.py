"""End-to-end fixtures: the simulated VPS with the current sources deployed. It is brought up
and deployed when missing; an e2e test never skips for want of it."""

from __future__ import annotations

import os

import pytest

from tests.e2e.live import Live


#: README's deploy from nothing: it removes any simulated VPS and makes its own, which the other
#: modules then use, so it goes first (a module before it would bring a VPS up only to lose it)
FIRST = "tests/e2e/test_deploy.py::"


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: deploys to the simulated VPS (brought up when missing)")


def pytest_collection_modifyitems(session, config, items):
    """The e2e items in their order, test_deploy.py's moved ahead of the others; the items of
    other tiers keep their places."""
    places = [i for i, item in enumerate(items) if item.nodeid.startswith("tests/e2e/")]
    ordered = sorted((items[i] for i in places), key=lambda item: not item.nodeid.startswith(FIRST))
    for place, item in zip(places, ordered):
        items[place] = item


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
