"""The containers' logs: the lines that known incidents leave behind (grep runs on the server)."""

from __future__ import annotations

from dataclasses import dataclass

from ..layout import ONEOFF_LABEL, SERVICE_LABEL, project_filter
from .base import Fact, marked_blocks, read, script


@dataclass(frozen=True)
class Signature:
    """A log line that a past incident left behind; finding it again means the incident is back."""

    key: str
    text: str
    incident: str


SIGNATURES = (
    Signature("event_loop_closed", "Event loop is closed",
              "an event loop per Celery task (asyncio.run) closed under pooled clients; "
              "tasks must use run_in_worker_loop (the Worker Lifespan Pattern)"),
    Signature("client_closed", "Cannot send a request, as the client has been closed",
              "a shared HTTP client was closed inside a task (a `finally: aclose()`); "
              "shared clients close once, at process shutdown"),
    Signature("task_exception_never_retrieved", "Task exception was never retrieved",
              "an asyncio task failed and nothing awaited it: its error was lost"),
    Signature("module_not_found", "ModuleNotFoundError",
              "the image lacks a Python module; add it to requirements and to the build's import_checks"),
    Signature("too_many_clients", "too many clients",
              "Postgres refused connections: a connection leak (an engine or pool per request)"),
    Signature("remaining_connection_slots", "remaining connection slots",
              "Postgres ran out of connection slots: a connection leak (an engine or pool per request)"),
)


@dataclass(frozen=True)
class LogHit:
    service: str
    container: str
    signature: str  # Signature.key
    line: str


def matches(project: str, signatures=SIGNATURES, per_container: int = 20) -> Fact:
    """The fact: a LogHit per line of a project container's log that holds a signature."""
    patterns = "\n".join(s.text for s in signatures)
    return script("logs.sh", SERVICE_LABEL, ONEOFF_LABEL, str(int(per_container)), patterns,
                  *project_filter(project, oneoff=None), parse=lambda text: log_hits(text, signatures), name="logs")


def log_hits(output: str, signatures=SIGNATURES) -> list[LogHit]:
    """The output of `logs.sh` -> one hit per (line, signature) it holds; one-off containers
    (migrations, `compose run`) are left out."""
    hits = []
    for head, block in marked_blocks(output, "container"):
        service, _, rest = head.partition("|")
        name, _, oneoff = rest.partition("|")
        if oneoff.strip().lower() == "true":
            continue
        for line in block.splitlines():
            _, _, text = line.partition(":")  # grep -n's "N:"
            for sig in signatures:
                if sig.text in text:
                    hits.append(LogHit(service, name.lstrip("/"), sig.key, text.strip()))
    return hits


def gather(connection, project: str, more: str = "") -> list[LogHit]:
    return read(connection, matches(project), what="the container logs", more=more)
