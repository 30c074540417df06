"""What the suite knows about the server, gathered once per run and concurrently.

Each source is one command on the server (or one local probe) that answers many checks; the
session starts the sources its selected tests need, in parallel, as soon as it begins, so the
whole suite costs about as long as its slowest source (the SSE check).
"""

from __future__ import annotations

import shlex
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from opskit import smoke
from opskit.facts import acme, backup, caddy, docker, host, logs, postgres, read, redis, release
from opskit.facts.celery import ProbeSession, probe_argv
from opskit.layout import Layout, compose_argv

from .remote import Remote, ssh_auth_methods
from .web import SseResult, Web, sse_check


class Server:
    """Lazy, concurrent sources of facts. `get(name)` starts a source if needed and waits."""

    SOURCES = ("host", "clock", "backup", "release", "docker", "plan", "caddy", "logs", "pg_admin", "pg_ui", "redis",
               "probe", "sse", "sshd_auth", "provisioning")

    def __init__(self, env, remote: Remote, web_address: tuple):
        self.env, self.remote = env, remote
        self.layout = Layout(env.remote_dir)
        self.web_address = web_address  # (address, http_port, https_port)
        self.pool = ThreadPoolExecutor(max_workers=len(self.SOURCES) + 2, thread_name_prefix="smoke")
        self.futures: dict[str, Future] = {}
        self.want_sse = False
        self._probe: ProbeSession | None = None
        self._probe_lock = threading.Lock()
        self.started = time.monotonic()

    # -- plumbing

    def prefetch(self, names) -> None:
        for name in names:
            self._future(name)

    def _future(self, name: str) -> Future:
        if name not in self.futures:
            self.futures[name] = self.pool.submit(getattr(self, f"_gather_{name}"))
        return self.futures[name]

    def get(self, name: str):
        return self._future(name).result()

    def close(self) -> None:
        if self._probe is not None:
            # stdin closed, the probe ends by itself (at most its beat wait later): don't wait for it
            self._probe.process.finish(timeout=0.5)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def compose_hint(self, *args) -> str:
        return smoke.compose_hint(self.env, *args)

    def release_compose_hint(self, *args) -> str:
        """A compose command on the current release's own file (for what the file says)."""
        return shlex.join(compose_argv(self.layout.current, *args))

    # -- sources: each one round trip (or one probe) over the facts of opskit.facts

    def _gather_host(self) -> host.HostFacts:
        return host.gather(self.remote, self.layout)

    def _gather_clock(self) -> host.Clock:
        return host.sample_clock(self.remote)

    def _gather_release(self) -> release.ReleaseFacts:
        return release.gather(self.remote, self.layout)

    def _gather_docker(self) -> docker.DockerFacts:
        return docker.gather(self.remote, self.env.project)

    def _gather_plan(self) -> docker.ComposePlan:
        path = self.get("release").path
        if not path:
            return docker.ComposePlan({}, f"no current release: {self.layout.current} resolves to nothing")
        return read(self.remote, docker.compose_plan(path), check=False)

    def _gather_caddy(self) -> caddy.CaddyFacts:
        return caddy.gather(self.remote, self.env.project, not self.env.tls.is_acme,
                            more=self.compose_hint("logs", "--tail", "50", "caddy"))

    def _gather_backup(self) -> tuple:
        if self.env.backup is None:  # its checks skip; nothing to read
            return [], None
        return backup.gather(self.remote, self.env)

    def _gather_acme(self) -> dict:
        return acme.gather(self.remote, self.env.project, more=self.compose_hint("logs", "caddy"))

    def _gather_logs(self) -> list:
        return logs.gather(self.remote, self.env.project, more=self.compose_hint("logs"))

    def _gather_pg_admin(self) -> postgres.PgAdmin:
        return read(self.remote, postgres.admin(self.env), what=f"Postgres as {self.env.postgres.admin_role}",
                    more=self.compose_hint("logs", "--tail", "50", "postgres"), timeout=30)

    def _gather_pg_ui(self) -> postgres.PgUi:
        return read(self.remote, postgres.ui(self.env), timeout=30, check=False)

    def _gather_redis(self) -> redis.RedisFacts:
        return redis.gather(self.remote, self.env, more=self.compose_hint("logs", "--tail", "50", "redis"))

    def _start_probe(self) -> "ProbeSession":
        """The probe process, started once (the SSE check may need it before it is ready)."""
        with self._probe_lock:
            if self._probe is None:
                beat_wait = self.env.beat_interval.seconds + 2
                self._probe = ProbeSession(self.remote.start(probe_argv(self.env, beat_wait)),
                                           beat_wait + self.env.smoke.task_roundtrip.seconds + 30)
            return self._probe

    def _gather_probe(self) -> "ProbeSession":
        session = self._start_probe()
        session.wait("ready", timeout=session.patience)
        if not self.want_sse:
            session.process.close_stdin()
        return session

    def _gather_sse(self) -> SseResult:
        env = self.env
        running = self.get("caddy")
        heartbeat = _running_heartbeat(self.get("docker"), env)
        address, http_port, https_port = self.web_address
        web = Web(address, http_port, https_port, running.root_pem)
        run_id = str(uuid.uuid4())
        bound = env.smoke.task_roundtrip.seconds
        probe = self._start_probe()

        def trigger():
            ping = probe.wait("ping", timeout=probe.patience)
            if not ping:
                raise RuntimeError("the Celery probe in the api container did not start: "
                                   + (probe.stderr.strip()[-200:] or "no output"))
            if not ping.get("workers"):
                raise RuntimeError("no Celery worker answered ping, so no task can publish the event")
            probe.process.send(f"record_run {run_id}\n")

        try:
            return sse_check(web, env.domains.api, f"/stream/{run_id}",
                             {"X-API-Key": env.secrets["api_key"].reveal()}, heartbeat, bound, trigger, run_id)
        finally:
            probe.process.close_stdin()

    def _gather_provisioning(self):
        from opskit.provision.run import inspect

        return inspect(AsRoot(self.remote), self.env)

    def _gather_sshd_auth(self) -> dict:
        out = {}
        for user in dict.fromkeys((self.env.ssh.user, "root")):
            try:
                out[user] = ssh_auth_methods(self.env.ssh, user)
            except Exception as exc:  # reported by the test that needs it
                out[user] = exc
        return out


class AsRoot:
    """The server's commands through `sudo -n`: provisioning's facts read what only root may
    (`sshd -T`, the loaded ruleset); `invoke provision` gives the deploy user that sudo."""

    def __init__(self, remote: Remote):
        self.remote = remote

    def run(self, argv, stdin: bytes | None = None, timeout: float = 60):
        return self.remote.run(["sudo", "-n", "--", *argv], stdin=stdin, timeout=timeout)


def _running_heartbeat(containers: docker.DockerFacts, env) -> float:
    """SSE_HEARTBEAT_SECONDS of the running api container (what the stream really does), else
    the inventory's value."""
    api = containers.one("api")
    raw = api.env.get("SSE_HEARTBEAT_SECONDS") if api else None
    try:
        return float(raw)
    except (TypeError, ValueError):
        return env.sse.heartbeat.seconds
