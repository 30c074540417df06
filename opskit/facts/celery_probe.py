"""The Celery probe: run inside the api container (`python -c`, this file's text; opskit reads it
as data and never imports it). It has the broker and the migrations there.

Prints one JSON object per line (kinds: ping, alembic, roundtrip, beat, ready, record_run). Reads
only, apart from two tasks: app.tasks.ping, and app.tasks.record_run for the SSE check when asked
on stdin ("record_run RUN_ID", which also writes that run's row); EOF on stdin ends it.

Arguments: the round-trip bound (s), the oldest beat heartbeat allowed (s), how long to wait for
a fresh one (s).
"""

import json
import os
import sys
import threading
import time

T0 = time.monotonic()
_lock = threading.Lock()


def out(**kw):
    with _lock:
        print(json.dumps(dict(kw, at=round(time.monotonic() - T0, 2))), flush=True)


def secret(name):
    """A URL of the app's: from the file its NAME_FILE names (how the deploy gives secrets:
    /run/secrets, never the environment), else from NAME."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        with open(path, encoding="utf-8") as fh:
            return fh.read().rstrip("\n")
    return os.environ[name]


def beat(beat_max_age, beat_wait):
    # beat:last is written by the worker each time beat schedules app.tasks.beat_heartbeat; right
    # after a deploy the first one may still be due, so a stale value is awaited for a while
    try:
        import redis
        client = redis.Redis.from_url(secret("REDIS_URL"), socket_timeout=3, socket_connect_timeout=3)
        deadline = time.time() + beat_wait
        while True:
            raw = client.get("beat:last")
            age = None if raw is None else time.time() - float(raw)
            if (age is not None and age <= beat_max_age) or time.time() >= deadline:
                break
            time.sleep(0.5)
        client.close()
        out(kind="beat", age=age)
    except Exception as exc:
        out(kind="beat", age=None, error=f"{type(exc).__name__}: {exc}")


def main():
    bound, beat_max_age, beat_wait = (float(a) for a in sys.argv[1:4])
    threading.Thread(target=beat, args=(beat_max_age, beat_wait), name="beat").start()
    try:
        # a bare client of the app's broker (the app module would also load SQLAlchemy and the
        # worker's event loop): tasks are sent by name
        from celery import Celery
        app = Celery("opskit-smoke", broker=secret("CELERY_BROKER_URL"),
                     backend=secret("CELERY_RESULT_BACKEND"))
        app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    except Exception as exc:
        out(kind="error", step="celery client", error=f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    t = time.monotonic()
    try:
        replies = app.control.ping(timeout=1.0)
        workers = sorted(n for r in replies for n in r)
        out(kind="ping", workers=workers, seconds=time.monotonic() - t)
    except Exception as exc:
        workers = []
        out(kind="ping", workers=[], error=f"{type(exc).__name__}: {exc}")
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        out(kind="alembic", heads=sorted(ScriptDirectory.from_config(Config("alembic.ini")).get_heads()))
    except Exception as exc:
        out(kind="alembic", heads=[], error=f"{type(exc).__name__}: {exc}")
    if workers:
        t = time.monotonic()
        try:
            result = app.send_task("app.tasks.ping").get(timeout=bound)
            out(kind="roundtrip", result=result, seconds=time.monotonic() - t)
        except Exception as exc:
            out(kind="roundtrip", result=None, seconds=time.monotonic() - t, error=f"{type(exc).__name__}: {exc}")
    else:
        out(kind="roundtrip", result=None, seconds=0.0, error="not sent: no Celery worker answered ping")
    out(kind="ready")
    for line in sys.stdin:
        words = line.split()
        if len(words) == 2 and words[0] == "record_run":
            t = time.monotonic()
            try:
                res = app.send_task("app.tasks.record_run", args=[words[1]])
                out(kind="record_run_sent", task_id=res.id)
                value = res.get(timeout=bound)
                out(kind="record_run", result=value, seconds=time.monotonic() - t)
            except Exception as exc:
                out(kind="record_run", result=None, seconds=time.monotonic() - t, error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
