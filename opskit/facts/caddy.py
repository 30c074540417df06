"""Caddy: the config it runs (its admin API, adapted JSON), the root certificate of its local CA,
and a reader of Caddyfiles (the one a release holds, and the one Caddy loads)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field

from ..layout import project_filter
from .base import Fact, read, script, sections

# -- the running config ---------------------------------------------------------------------------------


@dataclass
class CaddyFacts:
    config: dict
    sites: dict  # host -> handlers
    root_pem: str | None


def running(project: str, with_root: bool) -> Fact:
    """The fact: the running config, and with `with_root` the local CA's root certificate."""
    return script("caddy.sh", "root" if with_root else "", *project_filter(project, "caddy"),
                  parse=lambda text: parse_running(text, with_root), name="caddy")


def parse_running(text: str, with_root: bool) -> CaddyFacts:
    s = sections(text)
    try:
        config = json.loads(s.get("config", "") or "null") or {}
    except ValueError:
        raise ValueError("Caddy's admin API (http://127.0.0.1:2019/config/ in the caddy container) "
                         "gave no JSON config") from None
    root = s.get("root")
    if with_root and (not root or "BEGIN CERTIFICATE" not in root):
        raise ValueError("no root certificate of Caddy's local CA in the caddy container "
                         "(/data/caddy/pki/authorities/local/root.crt)")
    return CaddyFacts(config, caddy_sites(config), root if root else None)


def gather(connection, project: str, with_root: bool, more: str = "") -> CaddyFacts:
    return read(connection, running(project, with_root), what="Caddy's running config", more=more, timeout=30)


def duration_seconds(value) -> float | None:
    """A Caddy JSON duration: integer nanoseconds, or a Go duration string ("600s", "1m30s")."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1e9
    if isinstance(value, str):
        units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
        parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)", value)
        if parts and "".join(n + u for n, u in parts) == value:
            return sum(float(n) * units[u] for n, u in parts)
    return None


def _handlers(routes) -> list[dict]:
    """Every handler in `routes`, subroutes flattened, in order."""
    out = []
    for route in routes or []:
        for handler in route.get("handle") or []:
            out.append(handler)
            if handler.get("handler") == "subroute":
                out.extend(_handlers(handler.get("routes")))
    return out


def caddy_sites(config: dict) -> dict[str, list[dict]]:
    """The running Caddy config -> {host name: its handlers (subroutes flattened)}."""
    sites: dict[str, list[dict]] = {}
    servers = (((config or {}).get("apps") or {}).get("http") or {}).get("servers") or {}
    for server in servers.values():
        for route in server.get("routes") or []:
            hosts = [h for m in route.get("match") or [] for h in m.get("host") or []]
            for h in hosts:
                sites.setdefault(h, []).extend(_handlers([route]))
    return sites


def handlers_of(handlers: list[dict], kind: str) -> list[dict]:
    return [h for h in handlers if h.get("handler") == kind]


def upstreams(proxy: dict) -> list[str]:
    return [u.get("dial", "") for u in proxy.get("upstreams") or []]


def has_basic_auth(handlers: list[dict]) -> bool:
    return any("http_basic" in (h.get("providers") or {}) for h in handlers_of(handlers, "authentication"))


def basic_auth_users(handlers: list[dict]) -> list[str]:
    return [a.get("username", "") for h in handlers_of(handlers, "authentication")
            for a in ((h.get("providers") or {}).get("http_basic") or {}).get("accounts") or []]


# -- Caddyfiles -----------------------------------------------------------------------------------------


@dataclass
class Node:
    """A Caddyfile directive (its words) and the block under it, so that readers assert structure
    (which site proxies where, with which options) rather than match strings."""

    words: list
    children: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.words[0] if self.words else ""

    def find(self, *path) -> "Node | None":
        """The first descendant following directive names, e.g. find("reverse_proxy", "transport")."""
        node = self
        for name in path:
            node = next((c for c in node.children if c.name == name), None)
            if node is None:
                return None
        return node

    def all(self, name) -> list["Node"]:
        out = []
        for child in self.children:
            if child.name == name:
                out.append(child)
            out.extend(child.all(name))
        return out


def parse_caddyfile(text: str) -> Node:
    """A Caddyfile -> its tree (ValueError when its braces do not balance)."""
    root = Node(["<root>"])
    stack = [root]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        if words and words[-1] == "{":
            node = Node(words[:-1])
            stack[-1].children.append(node)
            stack.append(node)
        elif words == ["}"]:
            if len(stack) == 1:
                raise ValueError("unbalanced braces: a `}` closes nothing")
            stack.pop()
        else:
            stack[-1].children.append(Node(words))
    if len(stack) != 1:
        raise ValueError("unbalanced braces: a block is not closed")
    return root


def site(root: Node, address: str) -> Node:
    """A site block, with its `import`ed snippets expanded in place."""
    snippets = {c.name[1:-1]: c for c in root.children if c.name.startswith("(")}
    for child in root.children:
        if child.words == [address]:
            expanded = []
            for c in child.children:
                expanded.extend(snippets[c.words[1]].children if c.name == "import" else [c])
            return Node(child.words, expanded)
    raise KeyError(address)


def caddyfile_headers(text: str) -> tuple[dict, tuple]:
    """Response headers a Caddyfile's `header { ... }` blocks set, and the ones they remove:
    ({name: value}, (removed names,)). Understands `Name "value"`, `Name value`, `-Name`,
    and the `+`/`>` prefixes."""
    set_: dict[str, str] = {}
    removed: list[str] = []
    for block in parse_caddyfile(text).all("header"):
        for words in (c.words for c in block.children):
            if words and words[0].startswith("-"):
                removed.append(words[0][1:])
            elif len(words) >= 2:
                set_[words[0].lstrip("+>")] = " ".join(words[1:])
    return set_, tuple(dict.fromkeys(removed))
