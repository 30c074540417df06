"""A code-only deploy of the API that nobody notices, then a rollback, on the simulated VPS.

Once, while the deploy runs, everything that could notice it watches:
- 25 requests a second through Caddy to `api.` and `app.`: none fails;
- Docker's events of the API containers: the new one is healthy before the old one is stopped;
- the worker's events: the old one is told to stop once the new one started, before it is healthy;
- runs enqueued before and during the deploy, one of them started just before the worker's stop
  and longer than its soft shutdown (the deploy gives the worker a stop_grace_period of 12 s): all
  done, exactly once, the long one handed back by the stopping worker and resumed by the new one;
- beat's ticks: from one beat at a time, never silent for three intervals;
- Debian's Chromium, headless, on https://app.<domain>/: as the deploy migrates, just before the
  services are replaced, it starts a run with the page's button and follows it with the page's
  EventSource through the app's stream route, across the replacement of the API container under its
  stream: every status the run recorded arrives, in order, once each, after a counted reconnect.
Then a rollback to the release before, under the same load: start-first as well, and no failure.
The tests below each read one part of what was seen.

Traffic goes to 127.0.0.1 only (the browser maps the VPS's names there and nothing else anywhere)."""

from __future__ import annotations

import io
import sys
import time

import pytest

from opskit import deploy
from opskit.runner import Runner
from tests.e2e.live import code_change
from tests.e2e.load import Load
from tests.e2e.test_browser_csp import browser, visit  # noqa: F401  (the fixture)
from tests.e2e.watch import (Enqueuer, ServiceEvents, all_done, exactly_once, one_beat_at_a_time,
                             replaced_overlapped, replaced_start_first, ticks)

pytestmark = pytest.mark.e2e

RATE = 25.0
GRACE = 12  # the worker's stop_grace_period in the deploy: a soft shutdown of 12 - 5 s
# the page's run and another long run start as the deploy migrates, just before the services are
# replaced: the API is replaced under the page's stream, and both runs are still running when the
# worker is told to stop, longer than its soft shutdown, so they are handed back and resumed
LONG = 45.0
CUE = "] migrate: alembic upgrade head"


class Cue(io.TextIOBase):
    """The deploy's progress, passed on to stderr; each `cues[text]()` runs once, when a line
    holds its text."""

    def __init__(self, cues: dict):
        self.cues, self.fired = cues, set()

    def write(self, data: str) -> int:
        sys.stderr.write(data)
        for text, then in self.cues.items():
            if text not in self.fired and text in data:
                self.fired.add(text)
                then()
        return len(data)


def followed(driver) -> dict:
    return driver.execute_script("return window.followed")


def wait_for(driver, check, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        seen = followed(driver)
        if check(seen):
            return seen
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f}s; the page saw: {seen}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def seen(live, browser, tmp_path_factory):  # noqa: F811
    env = code_change(tmp_path_factory.mktemp("unnoticed"),
                      lambda raw: raw["defaults"]["services"]["worker"].update(stop_grace_period=f"{GRACE}s"))
    out: dict = {"interval": env.beat_interval.seconds, "since": time.time(), "old_api": set(live.containers("api")),
                 "old_worker": set(live.containers("worker"))}
    recording = ServiceEvents(live, "deploy").start()
    worker_recording = ServiceEvents(live, "deploy", "worker").start()

    page = visit(browser, f"https://{live.env.domains.app}/")
    assert page["title"] == "Runs" and page["violations"] == [], page
    browser.execute_script(f"document.getElementById('start-run').dataset.seconds = '{LONG:g}'")

    def start_the_pages_run():
        browser.find_element("id", "start-run").click()
        out["page_started"] = wait_for(browser, lambda f: any(e["status"] == "started" for e in f["events"]), 10,
                                       "no `started` on the page")

    load = Load(live.web(), [(live.env.domains.api, "/health"), (live.env.domains.app, "/")], RATE)
    short_runs = Enqueuer(live, every=1.0, seconds=0.5)
    long_run = Enqueuer(live, every=3600, seconds=LONG)
    load.start()
    short_runs.start()
    try:
        time.sleep(3)  # runs before the deploy starts
        cue = Cue({CUE: lambda: (long_run.start(), start_the_pages_run())})
        out["outcome"] = live.deploy(env, out=cue)
        assert cue.fired == {CUE}, f"the deploy lacked a step: {cue.fired}"
        time.sleep(3)  # and runs once the new worker is there
    finally:
        out["load"] = load.finish()
        # a POST on Caddy's kept-alive connection to the old API as it closes can come back 502:
        # a refused run (the client knows), never a lost one
        out["runs"] = short_runs.finish(may_refuse=2) + long_run.finish()
    out["long_run"] = long_run.accepted[0]
    out["new_api"] = set(live.containers("api"))
    out["api_events"] = recording.stop()
    out["worker_events"], out["new_worker"] = worker_recording.stop(), set(live.containers("worker"))
    out["page"] = wait_for(browser, lambda f: f["closed"], LONG + 120, "the run's final status did not reach the page")
    out["recorded"] = [line.split("|") for line in live.psql(
        f"SELECT id, status FROM run_events WHERE run_id = '{out['page']['runId']}' ORDER BY id").splitlines()]
    out["events"] = all_done(live, [*out["runs"], out["page"]["runId"]], timeout=LONG + 120)
    out["ticks"] = ticks(live, since=out["since"])

    # back to the release before (the current sources), start-first too, under the same load
    recording = ServiceEvents(live, "rollback").start()
    load = Load(live.web(), [(live.env.domains.api, "/health"), (live.env.domains.app, "/")], RATE)
    load.start()
    try:
        out["rolled_back_to"] = deploy.rollback(live.env, live.connection, Runner(live.connection))
    finally:
        out["rollback_load"] = load.finish()
    out["rollback_api_events"] = recording.stop()
    out["rolled_back_api"] = set(live.containers("api"))
    live.wait_healthy()
    return out


def test_no_request_through_caddy_fails_during_the_deploy(seen):
    load = seen["load"]
    assert load["failed"] == 0, load
    assert load["sent"] > 20 * RATE * 0.8, load  # the rate held over a deploy of 20 s and more
    print(f"\n{load['sent']} requests during the deploy, slowest {load['slowest_s']}s")


def test_the_new_api_container_is_healthy_before_the_old_one_stops(seen):
    titles = [title for title, _ in seen["outcome"].steps]
    assert any(t.startswith("replace the services side by side: api, frontend start-first") for t in titles), titles
    old, new = seen["old_api"], seen["new_api"]
    assert len(old) == 1 and len(new) == 1 and not old & new, (old, new)  # replaced, the old one removed
    replaced_start_first(seen["api_events"], old, new)


def test_the_old_worker_shuts_down_while_the_new_one_boots(seen):
    old, new = seen["old_worker"], seen["new_worker"]
    assert len(old) == 1 and len(new) == 1 and not old & new, (old, new)  # replaced, the old one removed
    replaced_overlapped(seen["worker_events"], old, new)


def test_runs_enqueued_before_and_during_the_deploy_finish_exactly_once(seen):
    assert len(seen["runs"]) > 10, seen["runs"]
    exactly_once(seen["events"])
    # the long run outlived the soft shutdown: the old worker handed it back, the new one resumed it
    assert seen["events"][seen["long_run"]] == ["started", "resumed", "done"], seen["events"][seen["long_run"]]


def test_one_beat_ticks_at_a_time_and_never_goes_silent(seen):
    found, interval = seen["ticks"], seen["interval"]
    beats = one_beat_at_a_time(found)
    assert len(beats) == 2, f"beat was not replaced by the deploy, or more than once: {beats}"
    gaps = [b["sent_at"] - a["sent_at"] for a, b in zip(found, found[1:])]
    # the longest silence between two ticks sent: the old beat's stop and the new one's start
    assert max(gaps) < 3 * interval, f"beat was silent for {max(gaps):.1f}s during the deploy"


def test_the_browser_receives_every_status_of_its_run_in_order_across_the_reconnect(seen):
    page, recorded = seen["page"], seen["recorded"]
    got = [[e["id"], e["status"]] for e in page["events"]]
    assert got == recorded, f"the page got {got}, the run recorded {recorded}"
    assert got[0][1] == "started" and got[-1][1] == "done", got
    # the API container its stream ran through was replaced: the stream was cut, and reconnected
    assert seen["page_started"]["opens"] == 1 and page["errors"] >= 1 and page["opens"] >= 2, page
    print(f"\nthe page followed run {page['runId']}: {got}, {page['opens']} connections")


def test_a_rollback_is_start_first_too_and_fails_no_request(seen, live):
    assert live.path.endswith("/" + seen["rolled_back_to"])
    assert seen["rollback_load"]["failed"] == 0, seen["rollback_load"]
    replaced_start_first(seen["rollback_api_events"], seen["new_api"], seen["rolled_back_api"])
    assert live.deploy(live.env).steps == []  # the release rolled back to is the current sources
