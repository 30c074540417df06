"""A value that must never be printed: redacted in repr/str, unwrapped only where it is used."""

from __future__ import annotations

import secrets as _random

REDACTED = "***"


class Secret:
    """Wraps a sensitive string. `str()` and `repr()` say ``***``; `.reveal()` gives the value."""

    __slots__ = ("_value", "name")

    def __init__(self, value: str, name: str = "secret"):
        self._value = value
        self.name = name

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return REDACTED

    def __repr__(self) -> str:
        return f"Secret({self.name}={REDACTED})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Secret) and _random.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", self.name))


def reveal(value) -> str:
    """The plain text of a value that may or may not be a Secret."""
    return value.reveal() if isinstance(value, Secret) else str(value)


def generate(nbytes: int = 24) -> str:
    """A random secret made of URL-safe characters (safe in URLs, env files and YAML)."""
    return _random.token_urlsafe(nbytes)
