"""SSH for the smoke suite: one verified connection, shared by testinfra and by the fact gathering.

testinfra's own `paramiko://` backend sets `WarningPolicy` and loads no known_hosts file, so it
would talk to any server that answers (testinfra/backend/paramiko.py, `ParamikoBackend.client`).
`PinnedParamikoBackend` keeps testinfra's API (host.file, host.run, ...) but takes its client
from `opskit.ssh.Connection`: the pinned known_hosts of the inventory and `RejectPolicy`.
"""

from __future__ import annotations

import functools
import shlex
import socket
import threading
import time

import paramiko
from testinfra.backend.paramiko import ParamikoBackend
from testinfra.host import Host

from opskit.ssh import Completed, Connection

#: sshd's MaxSessions defaults to 10 channels per connection: stay well below it
MAX_CHANNELS = 6


class Remote:
    """Commands on the server over one `opskit.ssh.Connection`, at most MAX_CHANNELS at a time."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.channels = threading.BoundedSemaphore(MAX_CHANNELS)
        self._lock = threading.Lock()

    @property
    def target(self):
        return self.connection.target

    def client(self) -> paramiko.SSHClient:
        """The live client; reconnects (with the same host key checks) if the transport died."""
        with self._lock:
            client = self.connection._client
            transport = client.get_transport() if client is not None else None
            if client is not None and (transport is None or not transport.is_active()):
                self.connection.close()
            return self.connection.client

    def run(self, argv, stdin: bytes | None = None, timeout: float = 60) -> Completed:
        """Run argv (joined with shlex) and collect all of its output, on a channel of its own."""
        self.client()  # reconnect first if the transport died
        with self.channels:
            return self.connection.run(argv, stdin=stdin, timeout=timeout)

    def start(self, argv) -> "RemoteProcess":
        return RemoteProcess(self.client(), argv)


class RemoteProcess:
    """A long-running command whose stdout lines are read as they come and whose stdin stays
    open for later input (the Celery probe waits there for the SSE check's request)."""

    def __init__(self, client: paramiko.SSHClient, argv):
        self.command = argv if isinstance(argv, str) else shlex.join(argv)
        self.chan = client.get_transport().open_session()
        self.chan.exec_command(self.command)
        self.lines: list[str] = []
        self.stderr = bytearray()
        self.exit_status: int | None = None
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="smoke-probe-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pending = b""
        while True:
            progressed = False
            if self.chan.recv_ready():
                data = self.chan.recv(65536)
                progressed = True
                pending += data
                *done, pending = pending.split(b"\n")
                if done:
                    with self._changed:
                        self.lines.extend(d.decode(errors="replace") for d in done)
                        self._changed.notify_all()
            if self.chan.recv_stderr_ready():
                self.stderr += self.chan.recv_stderr(65536)
                progressed = True
            if ((self.chan.eof_received or self.chan.closed) and not self.chan.recv_ready()
                    and not self.chan.recv_stderr_ready()):
                break
            if not progressed:
                time.sleep(0.01)
        with self._changed:
            if pending:
                self.lines.append(pending.decode(errors="replace"))
            self.exit_status = self.chan.recv_exit_status()
            self._changed.notify_all()

    def wait_for(self, predicate, timeout: float):
        """Wait until predicate(lines) is truthy (returns it), or the process ends, or timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate(list(self.lines))
                if value or self.exit_status is not None:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    return value
                self._changed.wait(min(left, 0.5))

    def send(self, text: str) -> None:
        self.chan.sendall(text.encode())

    def close_stdin(self) -> None:
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def finish(self, timeout: float = 10) -> None:
        self.close_stdin()
        self._reader.join(timeout)
        if self._reader.is_alive():
            self.chan.close()


class PinnedParamikoBackend(ParamikoBackend):
    """testinfra's paramiko backend on our verified connection (no WarningPolicy, no TOFU)."""

    NAME = "paramiko"

    def __init__(self, remote: Remote):
        t = remote.target
        host = f"[{t.host}]" if ":" in t.host else t.host
        super().__init__(f"{t.user}@{host}:{t.port}", timeout=int(remote.connection.timeout))
        self.remote = remote

    @functools.cached_property
    def client(self) -> paramiko.SSHClient:  # type: ignore[override]
        return self.remote.client()

    def _exec_command(self, command: bytes) -> tuple[int, bytes, bytes]:
        # reads stdout and stderr together (the parent reads stdout to its end first, which
        # stalls once a command fills the stderr window)
        done = self.remote.run(command.decode(errors="replace"), timeout=60)
        return done.returncode, done.stdout, done.stderr


def testinfra_host(remote: Remote) -> Host:
    backend = PinnedParamikoBackend(remote)
    host = Host(backend)
    backend.set_host(host)
    return host


def ssh_auth_methods(target, user: str, timeout: float = 10) -> list[str]:
    """The authentication methods sshd offers `user` (from a `none` attempt, as `ssh -v` shows),
    after checking the server's host key against the pinned known_hosts. Sends no credential."""
    sock = socket.create_connection((target.host, target.port), timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        known = paramiko.HostKeys(str(target.known_hosts))
        name = target.host if target.port == 22 else f"[{target.host}]:{target.port}"
        entry = known.lookup(name)
        if entry is None or entry.get(key.get_name()) != key:
            raise paramiko.SSHException(f"host key of {name} is not the one pinned in {target.known_hosts}")
        try:
            transport.auth_none(user)
        except paramiko.BadAuthenticationType as exc:
            return sorted(exc.allowed_types)
        return ["none"]
    finally:
        transport.close()
