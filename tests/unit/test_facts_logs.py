"""The logs fact and the Celery probe: signatures grepped on the server, the probe's answers."""

from __future__ import annotations

from opskit.facts import celery, logs

LOGS = """\
#####container:worker|/jobagent-worker-1|False
12:2025-01-01T00:00:00Z [ERROR] Failed to match job: RuntimeError: Event loop is closed
13:2025-01-01T00:00:01Z Task exception was never retrieved
#####container:api|/jobagent-api-run-1234|True
1:2025-01-01T00:00:00Z ModuleNotFoundError: No module named 'x'
#####container:postgres|/jobagent-postgres-1|False
7:2025-01-01T00:00:00Z FATAL:  sorry, too many clients already
8:2025-01-01 FATAL: remaining connection slots are reserved for roles with the SUPERUSER attribute
"""


def test_log_hits_name_service_and_signature():
    hits = logs.log_hits(LOGS)
    assert [(h.service, h.signature) for h in hits] == [
        ("worker", "event_loop_closed"), ("worker", "task_exception_never_retrieved"),
        ("postgres", "too_many_clients"), ("postgres", "remaining_connection_slots")]
    assert hits[0].container == "jobagent-worker-1" and hits[0].line.endswith("Event loop is closed")


def test_logs_script_greps_every_signature(make_env):
    argv = logs.matches(make_env("local").project).argv
    patterns = argv[7].splitlines()  # sh -c SCRIPT NAME SERVICE_LABEL ONEOFF_LABEL KEEP PATTERNS FILTER...
    for sig in logs.SIGNATURES:
        assert sig.text in patterns
    assert argv[6] == "20"


def test_probe_is_valid_python():
    compile(celery.PROGRAM.read_text(), "probe", "exec")


def test_probe_events_keep_the_last_of_each_kind():
    lines = ['{"kind": "ping", "workers": []}', "Traceback: noise", '{"kind": "ping", "workers": ["celery@a"]}',
             '{"kind": "ready"}', "{not json"]
    events = celery.probe_events(lines)
    assert events["ping"]["workers"] == ["celery@a"] and "ready" in events


def test_the_probe_runs_in_the_api_container_with_its_bounds(make_env):
    env = make_env("local")
    argv = celery.probe_argv(env, 12)
    assert argv[5] == "api" and argv[6:8] == ["python", "-c"]
    assert argv[-3:] == [f"{env.smoke.task_roundtrip.seconds:g}", f"{3 * env.beat_interval.seconds:g}", "12"]
