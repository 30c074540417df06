"""The Caddyfile reader for tests: it lives with the Caddy facts (`opskit.facts.caddy`), which
read the Caddyfile on the server with it too."""

from opskit.facts.caddy import Node, parse_caddyfile as parse, site

__all__ = ["Node", "parse", "site"]
