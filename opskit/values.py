"""Parsers for the small value types an inventory holds. Each returns the value or raises
`ValueError` with a plain-words description of what was expected."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_SIZE = re.compile(r"^(\d+)([kmg])$")
_PY_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")
_NODE_MODULE = re.compile(r"^(@[a-z0-9~][a-z0-9._~-]*/)?[a-z0-9~][a-z0-9._~-]*(/[A-Za-z0-9._~-]+)*$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IMAGE = re.compile(r"^[a-z0-9]+([._/:@-][A-Za-z0-9_.-]+)*$")


def hostname(value) -> str:
    """A DNS name of at least two labels, lower-case, e.g. api.example.com."""
    if not isinstance(value, str):
        raise ValueError(f"expected a hostname such as api.example.com, got {type(value).__name__}")
    labels = value.split(".")
    if len(labels) < 2 or len(value) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is not a hostname (expected lower-case labels joined by dots, e.g. api.example.com)")
    return value


def host(value) -> str:
    """An SSH host: an IP address or a hostname (single-label names such as `localhost` too)."""
    if not isinstance(value, str) or not value:
        raise ValueError("expected an IP address or a hostname")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if all(_LABEL.match(label) for label in value.split(".")):
        return value
    raise ValueError(f"{value!r} is neither an IP address nor a hostname")


def port(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a port number from 1 to 65535, got {value!r}")
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is out of range (expected 1 to 65535)")
    return value


def positive_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {value!r}")
    return value


@dataclass(frozen=True, order=True)
class Duration:
    """A span of time, kept as milliseconds; prints the way Caddy and Compose read it."""

    ms: int

    @property
    def seconds(self) -> float:
        return self.ms / 1000

    def __str__(self) -> str:
        if self.ms % 1000:
            return f"{self.ms}ms"
        return f"{self.ms // 1000}s"


def duration(value) -> Duration:
    """`600s`, `10m`, `1h30m`, `250ms`, or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 600s or 10m, got {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"a duration must be positive, got {value!r}")
        return Duration(int(round(value * 1000)))
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m and any(m.groups()):
            h, mi, s, ms = (int(g or 0) for g in m.groups())
            total = ((h * 60 + mi) * 60 + s) * 1000 + ms
            if total > 0:
                return Duration(total)
    raise ValueError(f"{value!r} is not a duration (expected e.g. 600s, 10m, 1h30m or 250ms)")


def size(value) -> str:
    """A size in Docker's notation: 512m, 1g, 10m (k, m or g)."""
    if isinstance(value, str) and _SIZE.match(value.lower()):
        return value.lower()
    raise ValueError(f"{value!r} is not a size (expected a number with k, m or g, e.g. 512m or 1g)")


def cpus(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"expected a positive number of CPUs such as 0.5 or 2, got {value!r}")
    return float(value)


def import_check(value, language: str) -> str:
    """A module path to import inside the image: `alembic.config:Config` (python) or `pg` (node)."""
    pattern = _PY_MODULE if language == "python" else _NODE_MODULE
    example = "alembic.config or alembic.config:Config" if language == "python" else "pg or @prisma/client"
    if isinstance(value, str) and pattern.match(value):
        return value
    raise ValueError(f"{value!r} is not a {language} module path (expected e.g. {example})")


def unix_user(value) -> str:
    if isinstance(value, str) and _USER.match(value):
        return value
    raise ValueError(f"{value!r} is not a user name (expected lower-case letters, digits, _ or -)")


def email(value) -> str:
    if isinstance(value, str) and _EMAIL.match(value):
        return value
    raise ValueError(f"{value!r} is not an email address")


def image(value) -> str:
    if isinstance(value, str) and _IMAGE.match(value):
        return value
    raise ValueError(f"{value!r} is not an image reference (expected e.g. postgres:16 or registry.example.com/team/api)")


def loopback_address(value) -> tuple[str, int]:
    """`127.0.0.1:5433`: an address on the loopback interface only (never a public one)."""
    if not isinstance(value, str) or value.count(":") != 1:
        raise ValueError(f"{value!r} is not HOST:PORT (expected e.g. 127.0.0.1:5433)")
    addr, _, raw_port = value.partition(":")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"{addr!r} is not an IP address (expected e.g. 127.0.0.1:5433)") from None
    if not ip.is_loopback:
        raise ValueError(f"{value!r} is not on loopback (expected e.g. 127.0.0.1:5433; Postgres must never listen on a public address)")
    if not raw_port.isdigit():
        raise ValueError(f"{raw_port!r} is not a port number")
    return addr, port(int(raw_port))


def env_var_name(value) -> str:
    if isinstance(value, str) and _ENV_NAME.match(value):
        return value
    raise ValueError(f"{value!r} is not an environment variable name")


def argv(value) -> tuple[str, ...]:
    """A command as a list of words (never a shell string)."""
    if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
        return tuple(str(v) for v in value)
    raise ValueError("expected a command as a non-empty list of words, e.g. [uvicorn, app.main:app]")
