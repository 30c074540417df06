"""Celery: a worker answers, beat schedules (its heartbeat task runs), a task comes back in time."""

from __future__ import annotations

import pytest

from .checks import listing, problem

pytestmark = pytest.mark.celery


def _event(probe, kind, server):
    event = probe.wait(kind, timeout=probe.patience)
    if event is None:
        error = probe.events.get("error") or {}
        pytest.fail(problem(
            f"the Celery probe in the api container gave no {kind} answer: "
            f"{error.get('error') or probe.stderr.strip()[-300:] or 'no output'}",
            server.compose_hint("logs", "--tail", "50", "api")))
    return event


def test_celery_worker_answers_ping(probe, server):
    ping = _event(probe, "ping", server)
    assert ping.get("workers"), problem(
        "no Celery worker answered ping within 1s" + (f" ({ping['error']})" if ping.get("error") else ""),
        server.compose_hint("logs", "--tail", "100", "worker"))


def test_celery_beat_is_scheduling(probe, env, server):
    beat = _event(probe, "beat", server)
    age, limit = beat.get("age"), 3 * env.beat_interval.seconds
    assert age is not None and age <= limit, problem(
        ("beat:last is missing from Redis" if age is None else f"beat's last heartbeat ran {age:.0f}s ago")
        + f" (beat_interval {env.beat_interval}, allowed {limit:g}s): beat schedules nothing, or no worker runs it"
        + (f"; {beat['error']}" if beat.get("error") else ""),
        server.compose_hint("logs", "--tail", "50", "beat", "worker"))


def test_celery_task_roundtrip_within_bound(probe, env, server):
    trip = _event(probe, "roundtrip", server)
    bound = env.smoke.task_roundtrip.seconds
    assert trip.get("result") == "pong" and trip.get("seconds", bound + 1) <= bound, problem(
        f"app.tasks.ping did not come back within smoke.task_roundtrip ({bound:g}s): "
        + (trip.get("error") or f"{trip.get('result')!r} after {trip.get('seconds', 0):.1f}s"),
        server.compose_hint("logs", "--tail", "100", "worker"))


def test_celery_worker_is_the_release_worker(probe, docker, server):
    ping = _event(probe, "ping", server)
    worker = docker.one("worker")
    if worker is None or not ping.get("workers"):
        pytest.fail(problem("no worker container or no worker answered ping", server.compose_hint("ps", "worker")))
    hostname = worker.id[:12]
    names = ping["workers"]
    assert any(n.endswith("@" + hostname) for n in names), problem(
        f"the workers answering ping ({listing(names)}) are not the worker container {worker.name} "
        f"(celery@{hostname}): another worker shares this broker", server.compose_hint("ps", "worker"))
