"""Celery across a deploy and a broker restart, on the simulated VPS: runs enqueued before and
during a code-only deploy (one of them still running when the worker is told to stop) and runs
enqueued while Redis restarts all reach `done`, exactly once; and never two beats at a time.

Traffic goes to the VPS's published 443 on 127.0.0.1 only, through Caddy, as a client would."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.e2e.live import code_change

pytestmark = pytest.mark.e2e

GRACE = 12  # the worker's stop_grace_period in the deploy below: a soft shutdown of 12 - 5 s
# a run that the deploy, started with it, reaches the worker's stop well inside of (a code-only
# build and ship take ~20 s), and that is longer than the soft shutdown
LONG = 45.0
REDIS_CLI = 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli --no-auth-warning'


class Enqueuer(threading.Thread):
    """POST /runs through Caddy every `every` seconds with `seconds` of work each, until stopped;
    keeps the id of every run accepted (202) and every other answer."""

    def __init__(self, live, every: float, seconds: float):
        super().__init__(daemon=True)
        self.live, self.every, self.seconds = live, every, seconds
        self.accepted: list[str] = []
        self.refused: list = []
        self.stop = threading.Event()

    def run(self):
        env = self.live.env
        headers = {"X-API-Key": env.secrets["api_key"].reveal(), "Content-Type": "application/json"}
        body = json.dumps({"seconds": self.seconds}).encode()
        web = self.live.web()
        while True:
            try:
                answer = web.request(env.domains.api, "/runs", headers, method="POST", body=body, timeout=60)
                if answer.status == 202:
                    self.accepted.append(json.loads(answer.body)["run_id"])
                else:
                    self.refused.append((answer.status, answer.body[:200]))
            except OSError as exc:
                self.refused.append(repr(exc))
            if self.stop.wait(self.every):
                return

    def finish(self, may_refuse: int = 0) -> list[str]:
        """The runs accepted; fails when more than `may_refuse` were not, or one was not answered."""
        self.stop.set()
        self.join(90)
        assert len(self.refused) <= may_refuse and all(isinstance(r, tuple) for r in self.refused), \
            f"runs not accepted: {self.refused[:5]}"
        return self.accepted


def psql(live, sql: str) -> list[list[str]]:
    pg = live.env.postgres
    out = live.out(["docker", "exec", live.container("postgres"), "psql", "-X", "-At", "-F", " ", "-U",
                    pg.admin_role, "-d", pg.database, "-c", sql])
    return [line.split() for line in out.splitlines() if line.strip()]


def events(live, runs: list[str]) -> dict[str, list[str]]:
    """{run: its statuses in the order they were recorded}."""
    listed = ", ".join(f"'{run}'" for run in runs)
    found: dict[str, list[str]] = {run: [] for run in runs}
    for run, status in psql(live, f"SELECT run_id, status FROM run_events WHERE run_id IN ({listed}) ORDER BY id"):
        found[run].append(status)
    return found


def all_done(live, runs: list[str], timeout: float) -> dict[str, list[str]]:
    """Every run's events once each has `done` (or the test fails naming those that have not)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = events(live, runs)
        waiting = {run: statuses for run, statuses in seen.items() if "done" not in statuses}
        if not waiting:
            return seen
        assert time.monotonic() < deadline, (f"{len(waiting)} of {len(runs)} runs not done within {timeout:.0f}s: "
                                             f"{dict(list(waiting.items())[:5])}")
        time.sleep(1)


def exactly_once(seen: dict[str, list[str]]) -> None:
    for run, statuses in seen.items():
        assert statuses.count("done") == 1 and statuses.count("started") == 1, (run, statuses)
        assert statuses[0] == "started" and statuses[-1] == "done", (run, statuses)


def ticks(live, since: float) -> list[dict]:
    """Beat's ticks run since `since` (epoch seconds), oldest first: {"origin", "at"}."""
    out = live.out(["docker", "exec", live.container("redis"), "sh", "-c", f"{REDIS_CLI} LRANGE beat:ticks 0 -1"])
    found = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sorted((t for t in found if t["at"] >= since), key=lambda t: t["at"])


def one_beat_at_a_time(found: list[dict]) -> list[str]:
    """The beats in the order they ticked; fails when one ticks again after another took over."""
    order: list[str] = []
    for tick in found:
        if not order or order[-1] != tick["origin"]:
            assert tick["origin"] not in order, f"two beats ticked in turn: {[t['origin'] for t in found]}"
            order.append(tick["origin"])
    return order


def test_runs_across_a_deploy_finish_exactly_once_and_one_beat_ticks_at_a_time(live, tmp_path):
    env = code_change(tmp_path, lambda raw: raw["defaults"]["services"]["worker"].update(stop_grace_period=f"{GRACE}s"))
    interval = env.beat_interval.seconds
    started = time.time()
    long_run = Enqueuer(live, every=3600, seconds=LONG)  # one run, still running when the worker is told to stop
    short_runs = Enqueuer(live, every=1.0, seconds=1.0)
    short_runs.start()
    try:
        time.sleep(3)  # some runs before the deploy starts
        long_run.start()
        time.sleep(1)
        live.deploy(env)
        time.sleep(3)  # and some once the new worker runs
    finally:
        # a POST on Caddy's kept-alive connection to the API container being replaced can come back
        # 502 (issue 15's start-first is not there yet): a refused run, never a lost one
        runs = long_run.finish() + short_runs.finish(may_refuse=2)
    assert len(runs) > 10, runs
    seen = all_done(live, runs, timeout=LONG + 120)
    exactly_once(seen)
    # the long run outlived the soft shutdown: the old worker handed it back, the new one resumed it
    assert seen[long_run.accepted[0]] == ["started", "resumed", "done"], seen[long_run.accepted[0]]
    found = ticks(live, since=started)
    beats = one_beat_at_a_time(found)
    assert len(beats) == 2, f"beat was not replaced by the deploy, or more than once: {beats}"
    gaps = [b["at"] - a["at"] for a, b in zip(found, found[1:])]
    # the longest silence: the old beat's stop, the new one's start, and the worker's own restart
    assert max(gaps) < 3 * interval, f"beat was silent for {max(gaps):.1f}s during the deploy"
    live.deploy(live.env)  # the other tests expect the current sources


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
