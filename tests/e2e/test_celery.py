"""Celery through a broker or database blip, on the simulated VPS: runs enqueued while Redis or
Postgres restarts all reach `done`, exactly once (tasks in flight retry their connection errors),
and beat goes on. (Across a deploy: test_unnoticed_deploy.py.)

Traffic goes to the VPS's published 443 on 127.0.0.1 only, through Caddy, as a client would."""

from __future__ import annotations

import time

import pytest

from tests.e2e.watch import Enqueuer, all_done, exactly_once, ticks

pytestmark = pytest.mark.e2e


#: POSTs the API may answer with an error while Postgres is down (it cannot record the run, so it
#: accepts none): a refusal is an answer, never a run lost; Redis down costs none (publish retries)
MAY_REFUSE = {"redis": 0, "postgres": 60}


@pytest.mark.parametrize("service", sorted(MAY_REFUSE))
def test_runs_enqueued_while_a_backing_service_restarts_all_finish_exactly_once(live, service):
    load = Enqueuer(live, every=0.25, seconds=0.5)  # half a second of work: some run when it goes
    load.start()
    try:
        time.sleep(3)
        restarted = time.time()
        live.run(live.compose("restart", service), timeout=120)
        time.sleep(5)
    finally:
        runs = load.finish(may_refuse=MAY_REFUSE[service])
    assert len(runs) > 15, (runs, load.refused[:5])
    exactly_once(all_done(live, runs, timeout=180))
    # and beat goes on through the same broker
    deadline = time.monotonic() + 4 * live.env.beat_interval.seconds
    while not ticks(live, since=restarted + 1):
        assert time.monotonic() < deadline, f"no beat tick since {service} restarted"
        time.sleep(1)
    live.wait_healthy()
