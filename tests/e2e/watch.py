"""What the e2e tier watches while a deploy or a fault goes on: runs enqueued through Caddy and
what they recorded, beat's ticks, and the API containers' Docker events."""

from __future__ import annotations

import json
import shlex
import threading
import time

from opskit.layout import project_filter

REDIS_CLI = 'REDISCLI_AUTH="$(cat /run/secrets/redis_password)" redis-cli --no-auth-warning'


def start_run(web, env, seconds: float = 0.0):
    """POST /runs through Caddy: the answer (202 and the run's id when accepted)."""
    headers = {"X-API-Key": env.secrets["api_key"].reveal(), "Content-Type": "application/json"}
    return web.request(env.domains.api, "/runs", headers, method="POST",
                       body=json.dumps({"seconds": seconds}).encode(), timeout=60)


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
        web = self.live.web()
        while True:
            try:
                answer = start_run(web, self.live.env, self.seconds)
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


def events(live, runs: list[str]) -> dict[str, list[str]]:
    """{run: its statuses in the order they were recorded}."""
    listed = ", ".join(f"'{run}'" for run in runs)
    found: dict[str, list[str]] = {run: [] for run in runs}
    rows = live.psql(f"SELECT run_id, status FROM run_events WHERE run_id IN ({listed}) ORDER BY id")
    for line in rows.splitlines():
        run, status = line.split("|")
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
    """Beat's ticks sent since `since` (epoch seconds), in the order beat sent them: {"origin",
    "sent_at", "at"} (when a worker ran it: later, when the workers are busy or restarting)."""
    out = live.out(["docker", "exec", live.container("redis"), "sh", "-c", f"{REDIS_CLI} LRANGE beat:ticks 0 -1"])
    found = [json.loads(line) for line in out.splitlines() if line.strip()]
    return sorted((t for t in found if (t.get("sent_at") or 0) >= since), key=lambda t: t["sent_at"])


def one_beat_at_a_time(found: list[dict]) -> list[str]:
    """The beats in the order they ticked; fails when one ticks again after another took over."""
    order: list[str] = []
    for tick in found:
        if not order or order[-1] != tick["origin"]:
            assert tick["origin"] not in order, f"two beats ticked in turn: {[t['origin'] for t in found]}"
            order.append(tick["origin"])
    return order


class ServiceEvents:
    """Docker's events of the containers of `service` (the API's unless told), recorded on the VPS
    from `start()` to `stop()` (the engine keeps only its last 256 events, a minute of healthchecks:
    too few to ask afterwards). `stop()` gives (action, container id) in order: create, start,
    health_status: healthy, kill..."""

    def __init__(self, live, name: str, service: str = "api"):
        self.live, self.service, self.path = live, service, f"/tmp/opskit-e2e-{name}-{service}-events"
        self.pid: str | None = None

    def start(self) -> "ServiceEvents":
        argv = ["docker", "events", "--filter", "type=container",
                *project_filter(self.live.env.project, self.service, oneoff=None),
                "--format", "{{.Action}}|{{.Actor.ID}}"]
        self.pid = self.live.out(["sh", "-c", f"{shlex.join(argv)} > {self.path} 2>&1 & echo $!"]).strip()
        time.sleep(0.5)  # subscribed before anything it should see happens
        return self

    def stop(self) -> list[tuple[str, str]]:
        time.sleep(0.5)
        self.live.run(["kill", self.pid], check=False)
        out = self.live.out(["sh", "-c", f"cat {self.path}; rm -f {self.path}"])
        return [tuple(line.split("|", 1)) for line in out.splitlines() if "|" in line]


def replaced_start_first(events: list[tuple[str, str]], old: set[str], new: set[str]) -> None:
    """The new container was healthy before the old one was told to stop."""
    actions = [action for action, _ in events]
    healthy = next((i for i, (a, c) in enumerate(events) if c in new and a.startswith("health_status: healthy")), None)
    stopped = next((i for i, (a, c) in enumerate(events) if c in old and a in ("kill", "stop", "die")), None)
    assert healthy is not None and stopped is not None, actions
    assert healthy < stopped, f"the old api was stopped before the new one was healthy: {events}"


def replaced_overlapped(events: list[tuple[str, str]], old: set[str], new: set[str]) -> None:
    """The new container started before the old one was told to stop, and that was before the new
    one was healthy: the old one's warm shutdown ran while the new one booted."""
    def first(ids, *actions):
        return next((i for i, (a, c) in enumerate(events) if c in ids and a.startswith(actions)), None)
    started, stopped = first(new, "start"), first(old, "kill", "stop", "die")
    healthy = first(new, "health_status: healthy")
    assert None not in (started, stopped, healthy), events
    assert started < stopped < healthy, f"not overlapped (start {started}, stop {stopped}, healthy {healthy}): {events}"
