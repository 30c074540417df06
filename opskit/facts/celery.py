"""Celery and Alembic, asked from inside the api container by the probe program
`celery_probe.py` (sent as text, run with `python -c`): workers answering ping, beat's last
heartbeat, a task's round trip, the migrations' head; and, on request, a task that publishes an
SSE event."""

from __future__ import annotations

import json

from ..layout import project_filter
from .base import HERE, script_text, words

PROGRAM = HERE / "celery_probe.py"


def probe_argv(env, beat_wait: float) -> list[str]:
    """The probe, run in the api container; its answers come line by line (`probe_events`), and
    it waits on stdin for `record_run RUN_ID` until EOF."""
    bound = env.smoke.task_roundtrip.seconds
    beat_max_age = 3 * env.beat_interval.seconds
    inner = ["python", "-c", PROGRAM.read_text(), f"{bound:g}", f"{beat_max_age:g}", f"{beat_wait:g}"]
    return ["sh", "-c", script_text("in_service.sh"), "celery_probe", words(project_filter(env.project, "api")), "api",
            *inner]


def probe_events(lines) -> dict[str, dict]:
    """The probe's JSON lines -> {kind: last object of that kind}."""
    out = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "kind" in obj:
            out[obj["kind"]] = obj
    return out


class ProbeSession:
    """The probe's answers as they come; `wait(kind)` blocks until that answer is in. `process`
    is the running probe (its `lines` so far, `wait_for`, `send`, `close_stdin`, `stderr`)."""

    def __init__(self, process, patience: float):
        self.process = process
        self.patience = patience  # the longest any answer may take

    @property
    def events(self) -> dict:
        return probe_events(self.process.lines)

    @property
    def stderr(self) -> str:
        return self.process.stderr.decode(errors="replace")

    def wait(self, kind: str, timeout: float):
        return self.process.wait_for(lambda lines: probe_events(lines).get(kind), timeout)
