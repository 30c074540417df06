"""Redis, from inside its container: what it answers without its password, and with it."""

from __future__ import annotations

from dataclasses import dataclass

from ..layout import project_filter
from .base import Fact, read, script, sections


@dataclass
class RedisFacts:
    without_password: str
    with_password: str


def answers(env) -> Fact:
    """The fact: RedisFacts. The inventory's password travels on stdin, quoted for redis-cli."""
    password = env.secrets["redis_password"].reveal()
    quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return script("redis.sh", *project_filter(env.project, "redis"), parse=parse_answers, name="redis",
                  stdin=f"AUTH {quoted}\nPING\n".encode())


def parse_answers(text: str) -> RedisFacts:
    s = sections(text)
    return RedisFacts(s.get("noauth", "").strip(), s.get("auth", "").strip())


def gather(connection, env, more: str = "") -> RedisFacts:
    return read(connection, answers(env), what="Redis", more=more, timeout=30)
