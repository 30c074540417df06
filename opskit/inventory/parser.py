"""Walk one merged environment of the inventory and build its `Environment`, recording every
problem with its key path (`environments.production.domains.api: ...`) instead of stopping."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from .. import values
from .model import (APP_SERVICES, CSP, DEFAULT_CSP, LANGUAGES, OFFICIAL_IMAGES, SSE, TLS, Backup, Build, Domains,
                    MAX_GRACE, WORKER_DEFAULT_GRACE, WORKER_MIN_GRACE, WORKER_STOP_MARGIN, Environment, Logging,
                    Postgres, Resources, Service, Smoke, Target, Vps, expand)
from . import provisioning
from .secrets import BACKUP_SECRET_NAMES, SECRET_NAMES


def merge(base: dict, override: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in `override` replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class Where:
    """Names a merged key by where its value came from: the environment, or `defaults`."""

    def __init__(self, environment: str, env_raw):
        self.environment = environment
        self.env_raw = env_raw

    def __call__(self, *keys) -> str:
        node = self.env_raw
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return ".".join(("defaults",) + tuple(map(str, keys)))
            node = node[key]
        return ".".join(("environments", self.environment) + tuple(map(str, keys)))

    def env(self, *keys) -> str:
        return ".".join(("environments", self.environment) + tuple(map(str, keys)))


def unknown(mapping: dict, allowed, where, problems, *keys) -> None:
    """One problem per unknown key, each with its full path and the keys that are allowed."""
    expected = ", ".join(sorted(allowed))
    for key in sorted(set(mapping) - set(allowed), key=str):
        path = where(*keys, key) if callable(where) else str(key)
        problems.append(f"{path}: unknown key (expected one of: {expected})")


class Parser:
    """Walks the merged environment; every reader records a problem and returns None on error."""

    TOP = {
        "host", "ssh", "remote_dir", "keep_releases", "project", "domains", "tls", "images",
        "ship_images", "registry", "builds", "services", "postgres", "sse", "beat_interval", "flower",
        "resources", "logging", "smoke", "secrets", "secrets_file", "generate_secrets", "vps", "provision",
        "csp", "backup",
    }

    def __init__(self, data: dict, where: Where, problems: list, base: Path, name: str):
        self.data, self.where, self.problems, self.base, self.name = data, where, problems, base, name

    def fail(self, keys, message: str) -> None:
        self.problems.append(f"{self.where(*keys)}: {message}")

    def get(self, *keys, required=True, default=None):
        node = self.data
        for key in keys:
            if not isinstance(node, dict) or key not in node or node[key] is None:
                if required:
                    self.problems.append(f"{self.where.env(*keys)}: is required (set it here or under defaults.{'.'.join(keys)})")
                return default
            node = node[key]
        return node

    def typed(self, parse, *keys, required=True, default=None):
        value = self.get(*keys, required=required, default=None)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError as exc:
            self.fail(keys, str(exc))
            return default

    def section(self, keys, allowed, required=True) -> dict:
        value = self.get(*keys, required=required, default=None)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(keys, f"expected a mapping, got {type(value).__name__}")
            return {}
        unknown(value, allowed, self.where, self.problems, *keys)
        return value

    def text(self, *keys, required=True, default=None):
        return self.typed(values.plain_text, *keys, required=required, default=default)

    def boolean(self, *keys, default=False):
        def parse(v):
            if not isinstance(v, bool):
                raise ValueError(f"expected true or false, got {values.shown(v)}")
            return v
        return self.typed(parse, *keys, required=False, default=default)

    # -- sections ---------------------------------------------------------------------------------

    def environment(self) -> Environment:
        unknown(self.data, self.TOP, self.where, self.problems)
        ssh = self.ssh()
        return Environment(
            name=self.name,
            ssh=ssh,
            remote_dir=self.typed(values.server_path, "remote_dir"),
            keep_releases=self.typed(values.positive_int, "keep_releases", required=False, default=5),
            project=self.typed(_project, "project", required=False, default="jobagent"),
            domains=self.domains(),
            tls=self.tls(),
            images=self.images(),
            ship_images=self.boolean("ship_images"),
            registry=self.typed(_registry, "registry", required=False),
            builds=self.builds(),
            services=self.services(),
            postgres=self.postgres(),
            sse=self.sse(),
            beat_interval=self.typed(values.duration, "beat_interval", required=False, default=values.Duration(10000)),
            flower_user=self.flower(),
            resources=self.resources(),
            logging=self.logging(),
            smoke=self.smoke(),
            secrets={},
            vps=self.vps(),
            provision=provisioning.parse(self, ssh.key_file if ssh else None),
            root=self.base,
            secret_refs=self.section(("secrets",), set(SECRET_NAMES) | set(BACKUP_SECRET_NAMES), required=False),
            secrets_file=self.typed(lambda v: expand(values.plain_text(v), self.base), "secrets_file", required=False),
            generate_secrets=self.boolean("generate_secrets"),
            csp=self.csp(),
            backup=self.backup(),
        )

    def ssh(self) -> Target | None:
        self.section(("ssh",), {"port", "user", "key_file", "known_hosts"})
        host = self.typed(values.host, "host")
        port = self.typed(values.port, "ssh", "port", required=False, default=22)
        user = self.typed(values.unix_user, "ssh", "user")
        key_file = self.text("ssh", "key_file")
        known_hosts = self.text("ssh", "known_hosts")
        if None in (host, user, key_file, known_hosts):
            return None
        return Target(host, port, user, expand(key_file, self.base), expand(known_hosts, self.base))

    def domains(self) -> Domains | None:
        self.section(("domains",), {"app", "api", "flower"})
        names = [self.typed(values.hostname, "domains", k) for k in ("app", "api", "flower")]
        if None in names:
            return None
        if len(set(names)) != 3:
            self.fail(("domains",), f"app, api and flower must be three different names, got {names}")
        return Domains(*names)

    def csp(self) -> CSP:
        self.section(("csp",), {"app", "api", "flower"}, required=False)
        return CSP(**{role: self.typed(_csp, "csp", role, required=False, default=DEFAULT_CSP[role])
                      for role in ("app", "api", "flower")})

    def tls(self) -> TLS | None:
        raw = self.section(("tls",), {"mode", "email", "acme_ca", "acme_ca_root"})
        mode = self.get("tls", "mode")
        if mode not in (None, "acme", "internal"):
            self.fail(("tls", "mode"), f"{values.shown(mode)} is not a TLS mode (expected acme or internal)")
            return None
        email = ca = root = pem = None
        if mode == "acme":
            email = self.typed(values.email, "tls", "email")
            ca = self.typed(values.acme_directory, "tls", "acme_ca", required=False)
            root = self.typed(lambda v: expand(values.plain_text(v), self.base), "tls", "acme_ca_root", required=False)
            if root is not None:
                pem = self.ca_root_pem(root)
        else:
            for key in sorted({"acme_ca", "acme_ca_root"} & set(raw)):
                self.fail(("tls", key), "only for tls.mode acme (Caddy's local CA asks no ACME server)")
        return TLS(mode, email, ca, root, pem) if mode else None

    def ca_root_pem(self, path: Path) -> str | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.fail(("tls", "acme_ca_root"), f"cannot read {path}: {exc.strerror or exc}")
            return None
        if len(data) > values.PEM_MAX_BYTES:
            self.fail(("tls", "acme_ca_root"), f"{path} is larger than {values.PEM_MAX_BYTES} bytes: not a CA root")
            return None
        try:
            return values.pem_certificates(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            reason = "is not ASCII text" if isinstance(exc, UnicodeDecodeError) else str(exc)
            self.fail(("tls", "acme_ca_root"), f"{path} {reason}")
            return None

    def images(self) -> dict:
        self.section(("images",), set(OFFICIAL_IMAGES))
        return {name: self.typed(values.image, "images", name) for name in OFFICIAL_IMAGES}

    def builds(self) -> dict:
        raw = self.section(("builds",), {"api", "frontend"})
        out = {}
        for name in sorted(raw):
            keys = ("builds", name)
            self.section(keys, {"context", "dockerfile", "language", "repository", "args", "import_checks"})
            language = self.get(*keys, "language")
            if language not in (None,) + LANGUAGES:
                self.fail(keys + ("language",), f"{values.shown(language)} is not supported (expected python or node)")
                language = None
            context = self.text(*keys, "context")
            args = self.get(*keys, "args", required=False, default={}) or {}
            if not isinstance(args, dict) or not all(isinstance(v, (str, int, float)) for v in args.values()):
                self.fail(keys + ("args",), "expected a mapping of build argument names to values")
                args = {}
            checks = self.get(*keys, "import_checks", required=False, default=[]) or []
            if not isinstance(checks, list):
                self.fail(keys + ("import_checks",), "expected a list of module paths")
                checks = []
            parsed = []
            for i, check in enumerate(checks):
                try:
                    parsed.append(values.import_check(check, language or "python"))
                except ValueError as exc:
                    self.fail(keys + (f"import_checks[{i}]",), str(exc))
            registry = self.data.get("registry")
            project = self.data.get("project")
            namespace = registry if isinstance(registry, str) and registry else \
                project if isinstance(project, str) and project else "jobagent"
            repository = self.typed(values.image, *keys, "repository", required=False,
                                    default=f"{namespace.rstrip('/')}/{name}")
            if context and language:
                out[name] = Build(
                    name=name,
                    context=expand(context, self.base),
                    dockerfile=self.text(*keys, "dockerfile", required=False, default="Dockerfile"),
                    language=language,
                    repository=repository,
                    args=tuple(sorted((str(k), str(v)) for k, v in args.items())),
                    import_checks=tuple(parsed),
                )
        return out

    def services(self) -> dict:
        raw = self.section(("services",), set(APP_SERVICES))
        missing = [s for s in APP_SERVICES if s not in raw]
        if missing and raw:
            self.fail(("services",), f"missing {', '.join(missing)} (every app service needs a build and a healthcheck)")
        builds = self.get("builds", required=False, default={}) or {}
        builds = builds if isinstance(builds, dict) else {}
        out = {}
        for name in APP_SERVICES:
            if name not in raw:
                continue
            keys = ("services", name)
            self.section(keys, {"build", "command", "healthcheck", "port", "stop_grace_period"})
            build = self.text(*keys, "build")
            if build is not None and build not in builds:
                self.fail(keys + ("build",), f"{values.shown(build)} is not a build (expected one of: {', '.join(sorted(map(str, builds)))})")
            command = self.typed(values.argv, *keys, "command", required=False)
            health = self.typed(values.argv, *keys, "healthcheck")
            port = self.typed(values.port, *keys, "port", required=False)
            grace = self.stop_grace_period(name)
            if build is not None and health is not None:
                out[name] = Service(name, build, command, health, port, grace)
        for name in ("api", "flower", "frontend"):
            if name in out and out[name].port is None:
                self.fail(("services", name, "port"), "is required: Caddy proxies to it")
        return out

    def stop_grace_period(self, name: str) -> values.Duration | None:
        """How long Docker waits after SIGTERM. The worker's bounds Celery's soft shutdown, which
        ends WORKER_STOP_MARGIN before it so that unfinished tasks are requeued, not killed."""
        least = WORKER_MIN_GRACE if name == "worker" else values.Duration(1000)
        default = WORKER_DEFAULT_GRACE if name == "worker" else None
        grace = self.typed(values.duration, "services", name, "stop_grace_period", required=False, default=default)
        if grace is not None and not least.ms <= grace.ms <= MAX_GRACE.ms:
            why = (f" (the worker's soft shutdown ends {WORKER_STOP_MARGIN} before it)" if name == "worker" else "")
            self.fail(("services", name, "stop_grace_period"),
                      f"{grace} is outside {least}..{MAX_GRACE}{why}; e.g. stop_grace_period: 30s")
        return grace

    def postgres(self) -> Postgres | None:
        self.section(("postgres",), {"database", "superuser_role", "admin_role", "ui_role", "publish", "connection_limit"})
        self.section(("postgres", "connection_limit"), {"admin", "ui"}, required=False)
        database = self.typed(_identifier, "postgres", "database")
        admin = self.typed(_identifier, "postgres", "admin_role", required=False, default="job_agent_admin")
        ui = self.typed(_identifier, "postgres", "ui_role", required=False, default="job_agent_ui")
        superuser = self.typed(_identifier, "postgres", "superuser_role", required=False, default="postgres")
        publish = self.typed(values.loopback_address, "postgres", "publish", required=False, default=("127.0.0.1", 5433))
        admin_limit = self.typed(_limit, "postgres", "connection_limit", "admin", required=False, default=-1)
        ui_limit = self.typed(_limit, "postgres", "connection_limit", "ui", required=False, default=-1)
        if admin and ui and admin == ui:
            self.fail(("postgres", "ui_role"), f"must differ from admin_role ({values.shown(admin)}): the UI role must not own the schema")
        for key, other in (("admin_role", admin), ("ui_role", ui)):
            if superuser and other and superuser == other:
                self.fail(("postgres", "superuser_role"), f"must differ from {key} ({values.shown(other)}): "
                          "no role an app uses may be the superuser")
        if database is None:
            return None
        return Postgres(database, admin, ui, publish[0], publish[1], admin_limit, ui_limit, superuser)

    def sse(self) -> SSE:
        self.section(("sse",), {"read_timeout", "heartbeat", "stream_close_delay"}, required=False)
        read_timeout = self.typed(values.duration, "sse", "read_timeout", required=False, default=values.Duration(600_000))
        heartbeat = self.typed(values.duration, "sse", "heartbeat", required=False, default=values.Duration(15_000))
        close_delay = self.typed(values.duration, "sse", "stream_close_delay", required=False, default=values.Duration(300_000))
        if read_timeout and heartbeat and heartbeat >= read_timeout:
            self.fail(("sse", "heartbeat"), f"{heartbeat} must be shorter than sse.read_timeout ({read_timeout}), "
                      "or the proxy cuts streams between heartbeats")
        return SSE(read_timeout, heartbeat, close_delay)

    def flower(self) -> str | None:
        self.section(("flower",), {"user"})
        return self.typed(values.unix_user, "flower", "user")

    def resources(self) -> dict:
        known = set(APP_SERVICES) | set(OFFICIAL_IMAGES)
        raw = self.section(("resources",), known, required=False)
        out = {}
        for name in sorted(raw):
            self.section(("resources", name), {"memory", "cpus"})
            memory = self.typed(values.size, "resources", name, "memory")
            cpus = self.typed(values.cpus, "resources", name, "cpus", required=False, default=1.0)
            if memory:
                out[name] = Resources(memory, cpus)
        return out

    def logging(self) -> Logging:
        self.section(("logging",), {"max_size", "max_files"}, required=False)
        return Logging(
            self.typed(values.size, "logging", "max_size", required=False, default="10m"),
            self.typed(values.positive_int, "logging", "max_files", required=False, default=5),
        )

    def smoke(self) -> Smoke:
        self.section(("smoke",), {"min_free_disk_mb", "min_free_inodes_percent", "max_db_connections_percent",
                                  "task_roundtrip", "max_restarts", "max_clock_skew"}, required=False)

        def percent(v):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100:
                raise ValueError(f"expected a percentage from 1 to 100, got {values.shown(v)}")
            return v

        def count(v):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"expected a whole number of at least 0, got {values.shown(v)}")
            return v

        return Smoke(
            min_free_disk_mb=self.typed(values.positive_int, "smoke", "min_free_disk_mb", required=False, default=2048),
            min_free_inodes_percent=self.typed(percent, "smoke", "min_free_inodes_percent", required=False, default=10),
            max_db_connections_percent=self.typed(percent, "smoke", "max_db_connections_percent", required=False,
                                                  default=80),
            task_roundtrip=self.typed(values.duration, "smoke", "task_roundtrip", required=False,
                                      default=values.Duration(20_000)),
            max_restarts=self.typed(count, "smoke", "max_restarts", required=False, default=3),
            max_clock_skew=self.typed(values.duration, "smoke", "max_clock_skew", required=False,
                                      default=values.Duration(2000)),
        )

    def backup(self) -> Backup | None:
        from ..backup import restic  # the repository URL is checked by the code that will use it

        raw = self.section(("backup",), {"repository", "schedule", "keep", "keep_local", "max_age", "image"},
                           required=False)
        if not raw:
            return None
        self.section(("backup", "keep"), {"daily", "weekly", "last"}, required=False)

        def repository(v):
            try:
                return restic.repository(values.plain_text(v)).url
            except restic.RepositoryError as exc:  # it names the key itself; the path is added here
                raise ValueError(str(exc).removeprefix("backup.repository: ")) from None

        def calendar(v):
            text = values.plain_text(v)
            if not re.fullmatch(r"[A-Za-z0-9*:/,. ~-]{1,100}", text):
                raise ValueError(f"expected a systemd calendar event such as `*-*-* 03:15:00` or `daily`, "
                                 f"got {values.shown(v)}")
            return text

        defaults = Backup("")
        return Backup(
            repository=self.typed(repository, "backup", "repository"),
            schedule=self.typed(calendar, "backup", "schedule", required=False, default=defaults.schedule),
            keep_daily=self.typed(values.positive_int, "backup", "keep", "daily", required=False,
                                  default=defaults.keep_daily),
            keep_weekly=self.typed(values.positive_int, "backup", "keep", "weekly", required=False,
                                   default=defaults.keep_weekly),
            keep_last=self.typed(values.positive_int, "backup", "keep", "last", required=False,
                                 default=defaults.keep_last),
            keep_local=self.typed(values.positive_int, "backup", "keep_local", required=False,
                                  default=defaults.keep_local),
            max_age=self.typed(values.duration, "backup", "max_age", required=False, default=defaults.max_age),
            image=self.typed(values.plain_text, "backup", "image", required=False, default=defaults.image),
        )

    def vps(self) -> Vps | None:
        raw = self.section(("vps",), {"container", "image", "http_port", "https_port"}, required=False)
        if self.get("generate_secrets", required=False) and not raw:
            self.fail(("generate_secrets",), "only a simulated VPS (an environment with `vps:`) may generate "
                      "its secrets; give real secrets by reference (env:NAME or file:KEY)")
        if not raw:
            return None
        return Vps(
            container=self.text("vps", "container", required=False, default="opskit-vps"),
            image=self.typed(values.image, "vps", "image", required=False, default="opskit/vps:bookworm"),
            http_port=self.typed(values.port, "vps", "http_port", required=False, default=80),
            https_port=self.typed(values.port, "vps", "https_port", required=False, default=443),
        )


def _project(value) -> str:
    if isinstance(value, str) and re.fullmatch(r"^[a-z0-9][a-z0-9_-]*$", value):
        return value
    raise ValueError(f"{values.shown(value)} is not a Compose project name (lower-case letters, digits, - and _)")


def _registry(value) -> str:
    """`registry.example.com/team` or `127.0.0.1:5000/jobagent`: a host (with a dot or a port)
    and a namespace, where built images are pushed as `<registry>/<build name>`."""
    host, _, namespace = str(value).partition("/")
    if (isinstance(value, str) and namespace and ("." in host or ":" in host)
            and re.fullmatch(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$", namespace)):
        return value.rstrip("/")
    raise ValueError(f"{values.shown(value)} is not a registry namespace (expected e.g. registry.example.com/team)")


def _identifier(value) -> str:
    """A Postgres name. Any one line of text up to 63 bytes is allowed: it is always quoted as an
    identifier (SQL), escaped for Compose and percent-encoded in URLs."""
    if isinstance(value, str) and values.plain_text(value) and len(value.encode()) <= 63:
        return value
    raise ValueError(f"{values.shown(value)} is not a Postgres name (1 to 63 bytes)")


_CSP_DIRECTIVE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*( [\x21-\x7e]+)*$")
_BREAKS_CADDYFILE = "which would end or change the Caddyfile's quoted header value"
#: each lands inside a double-quoted Caddyfile header value; none is ever needed in a policy
_CSP_REFUSED = {
    '"': f"a double quote, {_BREAKS_CADDYFILE} (CSP keywords take single quotes: 'self')",
    "\\": f"a backslash, {_BREAKS_CADDYFILE}",
    "{": "a brace, which Caddy reads as a placeholder",
    "}": "a brace, which Caddy reads as a placeholder",
    "`": f"a backtick, {_BREAKS_CADDYFILE}",
    ",": "a comma, which starts a second policy that browsers enforce as well (separate directives with ;)",
}


def _csp(value) -> str:
    """A Content-Security-Policy as Caddy sends it: directives `name value ...` separated by `;`,
    printable ASCII, with nothing that would end or change the Caddyfile's quoted value."""
    fix = "write it on one line as in the README's csp example, e.g. \"default-src 'self'; frame-ancestors 'none'\""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a Content-Security-Policy text, got {values.shown(value)}; {fix}")
    for char, why in _CSP_REFUSED.items():
        if char in value:
            raise ValueError(f"holds {why}; remove it")
    if any(not 0x20 <= ord(c) <= 0x7E for c in value):
        raise ValueError(f"{values.shown(value)} holds a newline, a tab or a non-ASCII character; {fix}")
    if value != value.strip():
        # HTTP drops a header value's outer spaces: the browser would get another text than this one
        raise ValueError(f"{values.shown(value)} starts or ends with a space; remove it")
    directives = [d.strip() for d in value.split(";") if d.strip()]
    bad = [d for d in directives if not _CSP_DIRECTIVE.match(" ".join(d.split()))]
    if not directives or bad:
        raise ValueError(f"{values.shown(bad[0] if bad else value)} is not a CSP directive (a name such as "
                         f"default-src, then its sources); {fix}")
    return value


def _limit(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1 or value == 0:
        raise ValueError(f"expected a connection limit of at least 1, or -1 for none, got {values.shown(value)}")
    return value
