"""Small helpers for the checks: failure messages that say what is wrong, where, and what to
run to see more."""

from __future__ import annotations


def problem(text: str, more: str | None = None) -> str:
    """An assertion message: the cause on the first line, then `more: COMMAND` (run on the
    server) when one shows the details. The suite's summary prints both."""
    return f"{text}\nmore: {more}" if more else text


def run_last(fn):
    """Run this check after all others: it compares a fact with its value at the start."""
    fn.run_last = True
    return fn


def listing(items, limit: int = 6) -> str:
    items = [str(i) for i in items]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
