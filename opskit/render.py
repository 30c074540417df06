"""Render a release: inventory (+ secrets) -> {relative path: file} for Compose, Caddy and Postgres.

Pure apart from reading templates and build contexts: the same inventory, secrets and sources
give the same bytes, and the release id is the hash of those bytes. Every decision is made here;
the templates in `compose/` and `caddy/` only loop and look up.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import bcrypt
import jinja2

from . import ROOT, values
from .errors import RenderError
from .inventory import Environment
from .inventory.secrets import check_secret
from .layout import Layout
from .postgres import roles_script
from .sources import context_digest, source_revision

# Short intervals make `up --wait` fast (Docker's default 30 s dominates it); start_period covers
# a first boot (initdb, migrations) without counting its failures.
HEALTH = {"interval": "5s", "timeout": "5s", "retries": 6, "start_period": "30s"}
BCRYPT_COST = 12
# How long Caddy retries an upstream that refuses connections (a container being replaced)
PROXY_RETRY = "30s"
ENV_DIR = "env"


@dataclass(frozen=True)
class File:
    content: bytes
    mode: int = 0o644
    secret: bool = False  # holds secrets: never printed, never diffed by value


@dataclass
class Release:
    environment: str
    files: dict = field(default_factory=dict)  # relative path -> File
    images: dict = field(default_factory=dict)  # service -> image reference
    builds: dict = field(default_factory=dict)  # build name -> {"image", "context_digest"}

    @property
    def id(self) -> str:
        h = hashlib.sha256()
        for path in sorted(self.files):
            if path == "manifest.json":
                continue
            h.update(path.encode() + b"\0" + self.files[path].content + b"\0")
        return h.hexdigest()[:12]


# -- public API -----------------------------------------------------------------------------------


def render(env: Environment, templates: Path = ROOT) -> Release:
    """Render every file of the release for `env` (whose secrets must be resolved)."""
    if not env.secrets:
        raise RenderError(f"environment {env.name}: secrets are not resolved; load the inventory with secrets")
    release = Release(env.name)
    for b in env.builds.values():
        if not (b.context / b.dockerfile).is_file():
            raise RenderError(f"builds.{b.name}.context: no {b.dockerfile} in {b.context}; point it at the "
                              "folder the image is built from")
    release.builds = {
        name: {"image": f"{b.repository}:{digest[:12]}", "context_digest": digest}
        for name, b in sorted(env.builds.items())
        for digest in [context_digest(b.context, b.dockerfile, b.args)]
    }
    release.images = {name: release.builds[svc.build]["image"] for name, svc in env.services.items()}
    release.images.update(env.images)

    jinja = _jinja(templates)
    compose = _compose_context(env, release)
    release.files["docker-compose.yml"] = File(_template(jinja, "compose/docker-compose.yml.j2", compose))
    release.files["Caddyfile"] = File(caddyfile(env, templates))
    for service, variables in sorted(_env_files(env).items()):
        release.files[f"{ENV_DIR}/{service}.env"] = File(_env_file(service, variables), 0o600, secret=True)
    release.files["postgres-init/10-roles.sh"] = File((templates / "postgres-init/10-roles.sh").read_bytes(), 0o755)
    release.files["postgres-init/roles.psql"] = File(roles_script(env.postgres).encode())
    release.files["manifest.json"] = File(_manifest(env, release))
    return release


def caddyfile(env: Environment, templates: Path = ROOT, upstreams: dict | None = None,
              global_options: tuple = (), admin: str = "localhost:2019") -> bytes:
    """The Caddyfile alone. Tests point `upstreams` at local servers, move the admin endpoint and
    add global options (ports, `default_bind 127.0.0.1`) to run it on loopback."""
    context = _caddy_context(env)
    context["upstreams"] = dict(upstreams or context["upstreams"])
    context["global_options"] = list(global_options)
    context["admin"] = admin
    return _template(_jinja(templates), "caddy/Caddyfile.j2", context)


def diff(release: Release, old: dict[str, bytes], old_label: str = "old") -> str:
    """A unified diff of a new render against `old` files; secret files show changed keys only."""
    import difflib

    lines: list[str] = []
    for path in sorted(set(old) | set(release.files)):
        new_file = release.files.get(path)
        before, after = old.get(path), new_file.content if new_file else None
        if before == after:
            continue
        secret = (new_file.secret if new_file else path.startswith(f"{ENV_DIR}/"))
        if secret:
            lines.append(_secret_diff(path, before, after))
            continue
        a = (before or b"").decode(errors="replace").splitlines(keepends=True)
        b = (after or b"").decode(errors="replace").splitlines(keepends=True)
        lines.extend(difflib.unified_diff(a, b, f"{old_label}/{path}", f"new/{path}"))
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@functools.lru_cache(maxsize=32)
def flower_password_hash(user: str, password: str) -> str:
    """bcrypt hash for Caddy's basic_auth, with a salt derived from the secret itself.

    A random salt would change the Caddyfile (and so the release id) on every render; a salt
    derived by HMAC from the password keeps renders byte-identical and still unique per secret.
    """
    raw = hmac.new(password.encode(), f"opskit flower salt {user}".encode(), hashlib.sha256).digest()[:16]
    std = base64.b64encode(raw).decode()[:22]
    salt_chars = std.translate(str.maketrans(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
    # the 22nd character carries 2 bits; bcrypt wants its low 4 bits clear
    last = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    salt_chars = salt_chars[:21] + last[last.index(salt_chars[21]) & 0x30]
    salt = f"$2b${BCRYPT_COST:02d}${salt_chars}".encode()
    return bcrypt.hashpw(password.encode(), salt).decode()


# -- templates ------------------------------------------------------------------------------------


def _jinja(templates: Path) -> jinja2.Environment:
    jinja = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    jinja.filters["compose"] = compose_value
    return jinja


def compose_value(value) -> str:
    """`value` (text, or a list of texts) written so that Compose reads back exactly `value`: a
    YAML double-quoted scalar with every `$` doubled (Compose interpolates every string of the file,
    `$$` being its literal `$`) and every character outside printable ASCII escaped (YAML refuses
    some written as they are, DEL for one). Context values are what the container gets, unescaped."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(compose_value(v) for v in value) + "]"
    return '"' + "".join(map(_yaml_char, str(value).replace("$", "$$"))) + '"'


def _yaml_char(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    if " " <= c <= "~":
        return c
    n = ord(c)
    return {"\n": "\\n", "\t": "\\t"}.get(c) or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000
                                                   else f"\\U{n:08x}")


def _template(jinja: jinja2.Environment, name: str, context: dict) -> bytes:
    try:
        return jinja.get_template(name).render(**context).encode()
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{name}:{exc.lineno}: {exc.message}\n  {_line(jinja, name, exc.lineno)}") from None
    except jinja2.UndefinedError as exc:
        lineno = _traceback_line(exc, name)
        where = f"{name}:{lineno}" if lineno else name
        raise RenderError(f"{where}: {exc.message} (the render context has no such value)"
                          + (f"\n  {_line(jinja, name, lineno)}" if lineno else "")) from None


def _traceback_line(exc: BaseException, name: str) -> int | None:
    tb, lineno = exc.__traceback__, None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return lineno


def _line(jinja: jinja2.Environment, name: str, lineno: int | None) -> str:
    source = jinja.loader.get_source(jinja, name)[0].splitlines()
    return source[lineno - 1].strip() if lineno and 0 < lineno <= len(source) else ""


# -- what the templates are given ----------------------------------------------------------------


def _compose_context(env: Environment, release: Release) -> dict:
    pg = env.postgres
    res = env.resources
    paths = Layout(env.remote_dir).shared()

    def app(name, depends_on, environment=()):
        svc = env.services[name]
        return {
            "name": name,
            "image": release.images[name],
            "command": list(svc.command) if svc.command else None,
            "healthcheck": ["CMD", *svc.healthcheck],
            "env_file": f"./{ENV_DIR}/{name}.env",
            "environment": sorted(environment),
            "depends_on": depends_on,
            "resources": res.get(name),
            "stop_grace_period": "30s" if name == "worker" else None,
            "user": None, "ports": [], "volumes": [],
        }

    healthy = "service_healthy"
    app_env = [("SSE_HEARTBEAT_SECONDS", _seconds(env.sse.heartbeat)),
               ("BEAT_INTERVAL_SECONDS", _seconds(env.beat_interval))]
    services = [
        {
            "name": "postgres", "image": env.images["postgres"], "user": None, "command": None,
            "env_file": f"./{ENV_DIR}/postgres.env",
            "environment": [("POSTGRES_DB", pg.database), ("POSTGRES_USER", pg.admin_role)],
            # loopback only: reached from outside through an SSH tunnel (`invoke db.tunnel`)
            "ports": [f"{pg.publish_host}:{pg.publish_port}:5432"],
            "volumes": ["postgres_data:/var/lib/postgresql/data",
                        f"{paths['postgres_init']}:/docker-entrypoint-initdb.d:ro"],
            "depends_on": [],
            # over TCP, so the temporary socket-only server of a first boot does not count as up
            "healthcheck": ["CMD", "pg_isready", "--host", "127.0.0.1", "--username", pg.admin_role,
                            "--dbname", pg.database],
            "resources": res.get("postgres"), "stop_grace_period": "60s",
        },
        {
            "name": "redis", "image": env.images["redis"], "user": "redis",
            # the password comes from the env file, so it is in no rendered file
            "command": ["sh", "-c", 'exec redis-server --requirepass "$REDIS_PASSWORD" --appendonly yes'],
            "env_file": f"./{ENV_DIR}/redis.env", "environment": [], "ports": [],
            "volumes": ["redis_data:/data"], "depends_on": [],
            "healthcheck": ["CMD-SHELL", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ping | grep -q PONG'],
            "resources": res.get("redis"), "stop_grace_period": None,
        },
        app("api", [("postgres", healthy), ("redis", healthy)], app_env),
        app("worker", [("postgres", healthy), ("redis", healthy)], app_env),
        app("beat", [("redis", healthy)], app_env),
        app("flower", [("redis", healthy)]),
        # not on the API: it would be recreated with every API deploy (see caddy below)
        app("frontend", [("postgres", healthy)],
            [("PORT", str(env.services["frontend"].port)), ("API_URL", f"http://api:{env.services['api'].port}"),
             ("BETTER_AUTH_URL", f"https://{env.domains.app}"), ("NODE_ENV", "production")]),
        {
            "name": "caddy", "image": env.images["caddy"], "user": None, "command": None,
            "env_file": None, "environment": [],
            "ports": ["80:80", "443:443", "443:443/udp"],
            "volumes": [f"{paths['caddy']}:/etc/caddy:ro", "caddy_data:/data", "caddy_config:/config"],
            # No depends_on: Compose recreates the dependents of a recreated service, so a Caddy that
            # depended on the API would restart (dropping every connection and SSE stream) on each
            # API deploy. Its retry window (PROXY_RETRY) holds requests while an upstream starts.
            "depends_on": [],
            "healthcheck": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:2019/config/"],
            "resources": res.get("caddy"), "stop_grace_period": None,
        },
    ]
    return {
        "environment": env.name,
        "project": env.project,
        "logging": {"max_size": env.logging.max_size, "max_files": env.logging.max_files},
        "health": HEALTH,
        "services": services,
        "volumes": ["caddy_config", "caddy_data", "postgres_data", "redis_data"],
    }


def _caddy_context(env: Environment) -> dict:
    s = env.services
    return {
        "environment": env.name,
        "tls": env.tls,
        "domains": env.domains,
        "sse": {"read_timeout": str(env.sse.read_timeout), "stream_close_delay": str(env.sse.stream_close_delay)},
        "upstreams": {name: f"{name}:{s[name].port}" for name in ("api", "flower", "frontend")},
        "proxy_retry": PROXY_RETRY,
        "flower": {"user": env.flower_user,
                   "password_hash": flower_password_hash(env.flower_user, _revealed(env)["flower_password"])},
    }


def _env_files(env: Environment) -> dict[str, list[tuple[str, str]]]:
    """What each service may know, and no more (Flower gets the broker, not the database)."""
    pg, sec = env.postgres, _revealed(env)
    redis = f"redis://:{quote(sec['redis_password'], safe='')}@redis:6379"
    admin_db = f"postgresql+psycopg://{quote(pg.admin_role, safe='')}:{quote(sec['postgres_admin_password'], safe='')}@postgres:5432/{quote(pg.database, safe='')}"
    ui_db = f"postgresql://{quote(pg.ui_role, safe='')}:{quote(sec['postgres_ui_password'], safe='')}@postgres:5432/{quote(pg.database, safe='')}"
    broker = [("CELERY_BROKER_URL", f"{redis}/1"), ("CELERY_RESULT_BACKEND", f"{redis}/2")]
    app = [("DATABASE_URL", admin_db), ("REDIS_URL", f"{redis}/0"), *broker,
           ("API_KEY", sec["api_key"]), ("APP_SECRET_KEY", sec["app_secret_key"])]
    return {
        "postgres": [("POSTGRES_PASSWORD", sec["postgres_admin_password"]),
                     ("POSTGRES_UI_PASSWORD", sec["postgres_ui_password"])],
        "redis": [("REDIS_PASSWORD", sec["redis_password"])],
        "api": app,
        "worker": app,
        "beat": [("REDIS_URL", f"{redis}/0"), *broker],
        "flower": [("REDIS_URL", f"{redis}/0"), *broker],
        "frontend": [("DATABASE_URL", ui_db), ("API_KEY", sec["api_key"]),
                     ("BETTER_AUTH_SECRET", sec["better_auth_secret"])],
    }


def _revealed(env: Environment) -> dict[str, str]:
    """The secrets' values, each checked again (an Environment may be built by hand): one that a
    service could not read back exactly stops the render, named, its value never shown."""
    problems = []
    for name, secret in sorted(env.secrets.items()):
        try:
            check_secret(name, secret.reveal())
        except ValueError as exc:
            problems.append(f"secrets.{name}: the value {exc}")
    if problems:
        raise RenderError(f"environment {env.name}: " + "; ".join(problems))
    return {name: secret.reveal() for name, secret in env.secrets.items()}


# What Compose's env-file parser does with `KEY=...` (compose-go's dotenv/parser.go,
# extractVarValue: the same from v2.0.2 to today's main; Debian's Compose 2.26 builds on 2.4.8):
# unquoted values lose ` #...` comments and trailing spaces and are interpolated. In single quotes
# a backslash before the quote escapes it, so a value ending in \ runs on into the next lines, and
# no escape can write it. In double quotes the scanner keeps each `\x` pair as it is (only `\"`
# loses its backslash), then expandEscapes turns \\ \n \r \$ into \ newline CR $$, and
# template.Substitute turns $$ into $. So escaping exactly \ " $ and line breaks in double quotes
# reads back as the very bytes written; NUL is the one character refused (no environment variable
# can hold it).
_ENV_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "\\$", "\n": "\\n", "\r": "\\r"}


def env_value(value: str) -> str:
    """`value` as the right-hand side of `KEY=...` in an env file, read back by Compose as `value`."""
    if "\0" in value or not values.is_utf8(value):
        raise ValueError("holds a NUL or is not valid UTF-8 text, which no environment variable can carry")
    return '"' + "".join(_ENV_ESCAPES.get(c, c) for c in value) + '"'


def _env_file(service: str, variables) -> bytes:
    lines = [f"# {service}: secrets for this service only. Mode 0600; never commit, never print."]
    for key, value in variables:
        try:
            lines.append(f"{key}={env_value(value)}")
        except ValueError as exc:
            raise RenderError(f"{ENV_DIR}/{service}.env: the value of {key} {exc}") from None
    return ("\n".join(lines) + "\n").encode()


def _manifest(env: Environment, release: Release) -> bytes:
    manifest = {
        "release": release.id,
        "environment": env.name,
        "project": env.project,
        "source_revision": source_revision(env.root),
        "images": dict(sorted(release.images.items())),
        "builds": release.builds,
        "files": {p: hashlib.sha256(f.content).hexdigest() for p, f in sorted(release.files.items())},
    }
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()


def _seconds(d) -> str:
    return f"{d.seconds:g}"


def _secret_diff(path: str, before: bytes | None, after: bytes | None) -> str:
    def keys(blob):
        out = {}
        for line in (blob or b"").decode(errors="replace").splitlines():
            if "=" in line and not line.startswith("#"):
                k, _, v = line.partition("=")
                out[k] = hashlib.sha256(v.encode()).hexdigest()
        return out

    a, b = keys(before), keys(after)
    if before is None:
        return f"+ {path}: new secret file ({', '.join(sorted(b))})\n"
    if after is None:
        return f"- {path}: removed\n"
    changes = [f"{k} {'added' if k not in a else 'removed' if k not in b else 'changed'}"
               for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return f"~ {path}: {', '.join(changes) or 'comments changed'} (values not shown)\n"
