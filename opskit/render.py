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

from . import ROOT, hardening
from .errors import RenderError
from .inventory import Environment
from .inventory.model import WORKER_DEFAULT_GRACE, WORKER_STOP_MARGIN
from .inventory.secrets import backup_secret_names, check_secret
from .layout import Layout
from .postgres import roles_script
from .sources import context_digest, source_revision

# Short intervals make `up --wait` fast (Docker's default 30 s dominates it); start_period covers
# a first boot (initdb, migrations) without counting its failures, and within it a check every
# start_interval (Engine 25+) finds a new container healthy within a second of it being so, where
# the first check at `interval` held every start-first and stop-first replacement 5 s.
HEALTH = {"interval": "5s", "timeout": "5s", "retries": 6, "start_period": "30s", "start_interval": "1s"}
BCRYPT_COST = 12
# How long Caddy retries an upstream that refuses connections (a container being replaced)
PROXY_RETRY = "30s"
# Secrets reach containers as files, never as environment values (`docker inspect` shows every
# environment value). Compose mounts a `file:` secret with a read-only bind mount at
# /run/secrets/<name> and ignores the secret's uid/gid/mode ("not supported" warning in
# pkg/compose/create.go, buildContainerSecretMounts, from v2.x to today's v5; Debian's 2.26 too),
# so the container sees the host file's owner and mode. The deploy user cannot give a file to
# postgres (999), redis (999) or the app users (10001, 10002), so the files are 0444 and the
# folder guards them: SECRETS_DIR_MODE (the deploy user's alone) inside remote_dir (0750). A
# container gets its own files only, so "everyone inside" is that one service. Compose's other
# kind, `environment:` secrets copied with a mode, would need each value in Compose's own
# environment at every `up`, and leaves it in the container's writable layer.
SECRETS_DIR = "secrets"
BACKUP_SCRIPT_FILE = "backup/backup.sh"  # what the backup timer runs (installed by the deploy)
SECRETS_DIR_MODE = 0o700
SECRET_FILE_MODE = 0o444
SECRETS_MOUNT = "/run/secrets"
# A label that changes with a service's secret files: Compose's config hash covers the service's
# own config (pkg/compose/hash.go), where a secret is a name, not the file's path or content, so
# without it a rotated secret would leave the running container on the old value. It is the same
# sha256 that the manifest already holds per file, over all of the service's files together.
SECRETS_LABEL = "org.opskit.secrets-digest"
# the env files of releases before secret files: still recognised as secret by `diff`
OLD_ENV_DIR = "env"
# Log fields that can carry a credential, as Caddy's filter encoder names them (nested with `>`;
# Go writes header names canonically, so X-API-Key arrives as X-Api-Key). `request>headers` is the
# request of reverse_proxy's warnings and of the error and access logs; `resp_headers` the access
# log's answer; `headers` reverse_proxy's debug line of the upstream's answer.
CADDY_LOG_DROPPED = tuple(
    [f"request>headers>{h}" for h in ("Authorization", "Cookie", "Proxy-Authorization", "X-Api-Key")]
    + [f"{where}>Set-Cookie" for where in ("resp_headers", "headers")])
# Caddy's 404 for a name that is none of the sites: nothing in it may load or frame anything
CSP_UNKNOWN_HOST = "default-src 'none'; frame-ancestors 'none'"


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
    compose = hardening.apply(_compose_context(env, release))
    release.files["docker-compose.yml"] = File(_template(jinja, "compose/docker-compose.yml.j2", compose))
    release.files["Caddyfile"] = File(caddyfile(env, templates))
    if env.tls and env.tls.acme_ca_root_pem:
        release.files[ACME_CA_ROOT_FILE] = File(env.tls.acme_ca_root_pem.encode())
    for name, value in sorted(_secret_files(env).items()):
        release.files[f"{SECRETS_DIR}/{name}"] = File(value.encode(), SECRET_FILE_MODE, secret=True)
    release.files["postgres-init/10-roles.sh"] = File((templates / "postgres-init/10-roles.sh").read_bytes(), 0o755)
    release.files["postgres-init/roles.psql"] = File(roles_script(env.postgres).encode())
    if env.backup is not None:
        release.files[BACKUP_SCRIPT_FILE] = File(backup_script(env).encode(), 0o700)
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
        secret = (new_file.secret if new_file else path.startswith((f"{SECRETS_DIR}/", f"{OLD_ENV_DIR}/")))
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
    files = _secret_files(env)
    superuser = pg.superuser_role

    def secrets(service):
        names = SERVICE_SECRETS[service]
        digest = hashlib.sha256()
        for name in names:
            digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
        return {"secrets": list(names), "labels": [(SECRETS_LABEL, digest.hexdigest()[:16])]}

    def app(name, depends_on, environment=()):
        svc = env.services[name]
        return {
            "name": name,
            "image": release.images[name],
            "command": list(svc.command) if svc.command else None,
            "healthcheck": ["CMD", *svc.healthcheck],
            "environment": sorted([*environment, *_file_variables(name)]),
            "depends_on": depends_on,
            "resources": res.get(name),
            "stop_grace_period": str(svc.stop_grace_period) if svc.stop_grace_period else None,
            "user": None, "ports": [], "volumes": [],
            **secrets(name),
        }

    healthy = "service_healthy"
    app_env = [("SSE_HEARTBEAT_SECONDS", _seconds(env.sse.heartbeat)),
               ("BEAT_INTERVAL_SECONDS", _seconds(env.beat_interval))]
    services = [
        {
            "name": "postgres", "image": env.images["postgres"], "user": None, "command": None,
            # the bootstrap superuser is the image's POSTGRES_USER; the init script reads the admin
            # and UI passwords from their files under /run/secrets itself
            "environment": [("POSTGRES_DB", pg.database), ("POSTGRES_USER", superuser),
                            *_file_variables("postgres")],
            # loopback only: reached from outside through an SSH tunnel (`invoke db.tunnel`)
            "ports": [f"{pg.publish_host}:{pg.publish_port}:5432"],
            "volumes": ["postgres_data:/var/lib/postgresql/data",
                        f"{paths['postgres_init']}:/docker-entrypoint-initdb.d:ro"],
            "depends_on": [],
            # over TCP, so the temporary socket-only server of a first boot does not count as up
            "healthcheck": ["CMD", "pg_isready", "--host", "127.0.0.1", "--username", superuser,
                            "--dbname", pg.database],
            "resources": res.get("postgres"), "stop_grace_period": "60s",
            **secrets("postgres"),
        },
        {
            "name": "redis", "image": env.images["redis"], "user": "redis",
            # its config file is a secret (`requirepass`), so the password is in no argv and no
            # environment; the healthcheck reads it into redis-cli's own environment only
            "command": ["redis-server", f"{SECRETS_MOUNT}/redis_conf", "--appendonly", "yes"],
            "environment": [], "ports": [],
            "volumes": ["redis_data:/data"], "depends_on": [],
            "healthcheck": ["CMD-SHELL", (f'REDISCLI_AUTH="$(cat {SECRETS_MOUNT}/redis_password)" '
                                          "redis-cli --no-auth-warning ping | grep -q PONG")],
            "resources": res.get("redis"), "stop_grace_period": None,
            **secrets("redis"),
        },
        app("api", [("postgres", healthy), ("redis", healthy)], app_env),
        app("worker", [("postgres", healthy), ("redis", healthy)], [*app_env, *_worker_stop(env)]),
        app("beat", [("redis", healthy)], app_env),
        app("flower", [("redis", healthy)]),
        # not on the API: it would be recreated with every API deploy (see caddy below)
        app("frontend", [("postgres", healthy)],
            [("PORT", str(env.services["frontend"].port)), ("API_URL", f"http://api:{env.services['api'].port}"),
             ("BETTER_AUTH_URL", f"https://{env.domains.app}"), ("NODE_ENV", "production")]),
        {
            "name": "caddy", "image": env.images["caddy"], "user": None, "command": None,
            "environment": [], "secrets": [], "labels": [],
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
        # from the shared folder, not the release's: a container outlives its release folder
        # (pruned), and Docker resolves a bind mount's source again at each restart
        "secrets": [(name, f"{paths['secrets']}/{name}") for name in sorted(files)],
    }


#: where Caddy reads `tls.acme_ca_root` (the release's acme_ca_root.pem, beside the Caddyfile in the
#: folder mounted at /etc/caddy): Caddy takes the ACME CA's root only as a file path
ACME_CA_ROOT_FILE = "acme_ca_root.pem"


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
        "csp": dict(env.csp.items()),
        "csp_unknown": CSP_UNKNOWN_HOST,
        "log_dropped": CADDY_LOG_DROPPED,
        "acme_ca_root": f"/etc/caddy/{ACME_CA_ROOT_FILE}" if env.tls and env.tls.acme_ca_root_pem else None,
    }


# Which secret files each service gets, and no more (Flower gets the broker, not the database;
# the worker no API key). Caddy gets none: only the Flower password's bcrypt hash is in its file.
SERVICE_SECRETS = {
    "postgres": ("postgres_superuser_password", "postgres_admin_password", "postgres_ui_password"),
    "redis": ("redis_conf", "redis_password"),
    "api": ("api_key", "app_secret_key", "celery_broker_url", "celery_result_backend", "database_url_admin",
            "redis_url"),
    "worker": ("celery_broker_url", "celery_result_backend", "database_url_admin", "redis_url"),
    "beat": ("celery_broker_url", "celery_result_backend", "redis_url"),
    "flower": ("celery_broker_url", "celery_result_backend", "redis_url"),
    "frontend": ("api_key", "better_auth_secret", "database_url_ui"),
}
# The program's variable for a file, where its name is not the file's: `<VARIABLE>_FILE` holds the
# path (the official postgres image's convention, which the sample app follows).
_VARIABLE = {"postgres_superuser_password": "POSTGRES_PASSWORD", "database_url_admin": "DATABASE_URL",
             "database_url_ui": "DATABASE_URL"}
# files a program finds by their fixed path (the postgres init script, Redis's command line)
_BY_PATH = {"postgres_admin_password", "postgres_ui_password", "redis_conf", "redis_password"}


def _worker_stop(env: Environment) -> list[tuple[str, str]]:
    """Docker's SIGTERM starts Celery's soft shutdown (REMAP_SIGTERM, a billiard setting): running
    tasks get until the grace period less the margin to finish, then the worker requeues what is
    still running (late acks) and exits, before Docker's SIGKILL could lose it."""
    grace = env.services["worker"].stop_grace_period or WORKER_DEFAULT_GRACE
    return [("REMAP_SIGTERM", "SIGQUIT"),
            ("WORKER_SOFT_SHUTDOWN_SECONDS", f"{(grace.ms - WORKER_STOP_MARGIN.ms) / 1000:g}")]


def _file_variables(service: str) -> list[tuple[str, str]]:
    """`NAME_FILE=/run/secrets/<file>` for each secret file of `service` that a program looks up."""
    return [(f"{_VARIABLE.get(name, name.upper())}_FILE", f"{SECRETS_MOUNT}/{name}")
            for name in SERVICE_SECRETS[service] if name not in _BY_PATH]


def _secret_files(env: Environment) -> dict[str, str]:
    """{file name: content} of every secret file: values as they are (no newline added), and the
    URLs and the Redis config built from them."""
    pg, sec = env.postgres, _revealed(env)
    redis = f"redis://:{quote(sec['redis_password'], safe='')}@redis:6379"
    database = f"@postgres:5432/{quote(pg.database, safe='')}"
    files = {name: sec[name] for name in ("postgres_superuser_password", "postgres_admin_password",
                                          "postgres_ui_password", "redis_password", "api_key", "app_secret_key",
                                          "better_auth_secret")}
    files["database_url_admin"] = (f"postgresql+psycopg://{quote(pg.admin_role, safe='')}:"
                                   f"{quote(sec['postgres_admin_password'], safe='')}{database}")
    files["database_url_ui"] = (f"postgresql://{quote(pg.ui_role, safe='')}:"
                                f"{quote(sec['postgres_ui_password'], safe='')}{database}")
    files["redis_url"] = f"{redis}/0"
    files["celery_broker_url"] = f"{redis}/1"
    files["celery_result_backend"] = f"{redis}/2"
    files["redis_conf"] = f"requirepass {redis_config_string(sec['redis_password'])}\n"
    # restic's: mounted by its own container only, never by a service
    files.update((name, sec[name]) for name in backup_secret_names(env.backup))
    return files


def backup_script(env: Environment, release_folder: str | None = None) -> str:
    """The backup as one shell script (paths only, no secret): the timer's, and, given the new
    release's folder, a deploy's before it migrates."""
    from .backup import schedule, settings
    from .backup.plan import backup_plan

    plan = backup_plan(settings.settings(env, release_folder), schedule.STAMP_NOW, schedule.RELEASE_NOW)
    return schedule.script(plan, env.remote_dir)


def redis_config_string(value: str) -> str:
    """`value` as one argument of a redis.conf line, read back by Redis as exactly its UTF-8 bytes.

    Redis splits config lines with sdssplitargs (src/sds.c): in double quotes, `\\xHH` is one
    byte and `\\` and `\"` are themselves; so every byte outside printable ASCII, and the two
    characters that quoting uses, are written as `\\xHH`."""
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\x{b:02x}"
                         for b in value.encode()) + '"'


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
    """One line per secret file: its name and what happened, never its value (an env file of an
    older release by its keys)."""
    if before is None:
        return f"+ {path}: new secret file (value not shown)\n"
    if after is None:
        return f"- {path}: removed\n"
    if not path.startswith(f"{OLD_ENV_DIR}/"):
        return f"~ {path}: changed (value not shown)\n"

    def keys(blob):
        out = {}
        for line in blob.decode(errors="replace").splitlines():
            if "=" in line and not line.startswith("#"):
                k, _, v = line.partition("=")
                out[k] = hashlib.sha256(v.encode()).hexdigest()
        return out

    a, b = keys(before), keys(after)
    changes = [f"{k} {'added' if k not in a else 'removed' if k not in b else 'changed'}"
               for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return f"~ {path}: {', '.join(changes) or 'comments changed'} (values not shown)\n"
