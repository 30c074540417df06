"""Celery through a broker restart, on the simulated VPS: runs enqueued while Redis restarts all
reach `done`, exactly once, and beat goes on. (Across a deploy: test_unnoticed_deploy.py.)

Traffic goes to the VPS's published 443 on 127.0.0.1 only, through Caddy, as a client would."""

from __future__ import annotations

import time

import pytest

from tests.e2e.watch import Enqueuer, all_done, exactly_once, ticks

pytestmark = pytest.mark.e2e


def test_runs_enqueued_while_redis_restarts_all_finish_exactly_once(live):
    load = Enqueuer(live, every=0.25, seconds=0.0)
    load.start()
    try:
        time.sleep(3)
        restarted = time.time()
        live.run(live.compose("restart", "redis"), timeout=120)
        time.sleep(5)
    finally:
        runs = load.finish()
    assert len(runs) > 20, runs
    exactly_once(all_done(live, runs, timeout=120))
    # and beat goes on through the same broker
    deadline = time.monotonic() + 4 * live.env.beat_interval.seconds
    while not ticks(live, since=restarted + 1):
        assert time.monotonic() < deadline, "no beat tick since Redis restarted"
        time.sleep(1)
    live.wait_healthy()
