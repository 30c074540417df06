"""One SSH connection to the server, with the host key checked against a pinned known_hosts file."""

from __future__ import annotations

import posixpath
import shlex
import socket
import time
import uuid
from dataclasses import dataclass

import paramiko

from .errors import AuthenticationRefused, CommandTimeout, ConnectionFailed, ConnectionLost
from .inventory.model import Target, expand  # noqa: F401  (re-exported: the transport speaks of targets)


@dataclass
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).decode(errors="replace")


class Connection:
    """A paramiko client that rejects unknown or changed host keys (no trust on first use)."""

    def __init__(self, target: Target, timeout: float = 15.0, sudo: bool = False):
        self.target = target
        self.timeout = timeout
        self.sudo = sudo  # every command runs as root through `sudo -n` (a non-root login that may)
        self._client: paramiko.SSHClient | None = None

    def open(self) -> "Connection":
        if self._client is not None:
            return self
        t = self.target
        if not t.known_hosts.is_file():
            raise ConnectionFailed(
                f"no known_hosts file at {t.known_hosts}: pin {t.host}'s host key there first "
                "(for the simulated VPS, `invoke vps.up` writes it)"
            )
        client = paramiko.SSHClient()
        client.load_host_keys(str(t.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                t.host,
                port=t.port,
                username=t.user,
                key_filename=str(t.key_file),
                look_for_keys=False,
                allow_agent=False,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
            )
        except paramiko.BadHostKeyException as exc:
            raise ConnectionFailed(
                f"{t}: host key does not match {t.known_hosts} ({exc}); "
                "if the server was rebuilt on purpose, pin its new key (the simulated VPS: `invoke vps.up` "
                "reads it through docker exec and pins it)"
            ) from exc
        except paramiko.AuthenticationException as exc:
            raise AuthenticationRefused(f"{t}: the server refuses this key ({exc})") from exc
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise ConnectionFailed(
                    f"{t}: host key not pinned in {t.known_hosts}; refusing to connect"
                ) from exc
            raise ConnectionFailed(f"{t}: {exc}") from exc
        except (OSError, socket.timeout) as exc:
            raise ConnectionFailed(f"{t}: cannot connect: {exc}") from exc
        transport = client.get_transport()
        transport.set_keepalive(15)
        self._client = client
        return self

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> "Connection":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def client(self) -> paramiko.SSHClient:
        return self.open()._client

    def reconnect(self, attempts: int = 5, first_wait: float = 1.0) -> "Connection":
        """A new connection after a lost one: a few tries, waiting longer each time (the host key
        checked as always). ConnectionFailed when the server stays out of reach."""
        self.close()
        wait, last = first_wait, None
        for _ in range(attempts):
            try:
                return self.open()
            except ConnectionFailed as exc:
                last = exc
                time.sleep(wait)
                wait *= 2
        raise ConnectionFailed(f"{self.target}: could not reconnect after {attempts} tries: {last}")

    def run(self, argv, stdin=None, timeout: float | None = None, on_line=None) -> Completed:
        """Run argv on the server (joined with shlex, so no shell meaning leaks in).

        `stdin` is bytes, or a function given a writable file-like object that streams into the
        remote program (how images travel to `docker load`). A broken link raises ConnectionLost,
        a command past `timeout` CommandTimeout: never a transport's own exception."""
        command = argv if isinstance(argv, str) else shlex.join(argv)
        if self.sudo:
            command = "sudo -n -- sh -c " + shlex.quote(command)
        try:
            return self._run(command, stdin, timeout, on_line)
        except (EOFError, OSError, paramiko.SSHException) as exc:
            raise self._lost(exc) from exc

    def _lost(self, exc: BaseException) -> ConnectionLost:
        self.close()
        return ConnectionLost(f"{self.target}: the connection was lost ({type(exc).__name__}: {exc or 'closed'})")

    def _run(self, command: str, stdin, timeout: float | None, on_line) -> Completed:
        # a 16 MB window: large transfers (images) run about 1.5x faster than with the 2 MB default
        chan = self.client.get_transport().open_session(window_size=16 * 1024 * 1024)
        chan.settimeout(timeout)
        chan.exec_command(command)
        if callable(stdin):
            try:
                stdin(_ChannelWriter(chan))
            except BaseException:  # the feed gave up: the program sees its input cut, the channel goes
                chan.close()
                raise
        elif stdin is not None:
            chan.sendall(stdin)
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        pending = b""
        deadline = time.monotonic() + timeout if timeout else None
        # Read to the channel's EOF, not to its exit status: sshd may send `exit-status` before
        # the last output (RFC 4254 orders neither), and stopping there loses output now and then.
        while True:
            progressed = False
            if chan.recv_ready():
                data = chan.recv(65536)
                out += data
                progressed = True
                if on_line:
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        on_line(line.decode(errors="replace"))
            if chan.recv_stderr_ready():
                data = chan.recv_stderr(65536)
                err += data
                progressed = True
                if on_line:
                    for line in data.decode(errors="replace").splitlines():
                        on_line(line)
            if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            if deadline and time.monotonic() > deadline:
                chan.close()
                raise CommandTimeout(f"the command did not finish within {timeout:g}s (stopped)")
            if not progressed:
                time.sleep(0.005)
        if on_line and pending:
            on_line(pending.decode(errors="replace"))
        code = chan.recv_exit_status()
        chan.close()
        transport = self._client.get_transport() if self._client is not None else None
        if code == -1 and (transport is None or not transport.is_active()):  # closed with no exit status
            raise EOFError("the server closed the link before the command ended")
        return Completed(code, bytes(out), bytes(err))

    def write_file(self, path: str, content: bytes, mode: int) -> None:
        """Write atomically: a temp file beside the target, chmod before any byte lands, rename."""
        if self.sudo:
            raise ValueError("write_file goes through SFTP as the login user; as root, use provision.item.put")
        try:
            self._write_file(path, content, mode)
        except (EOFError, paramiko.SSHException, ConnectionResetError, BrokenPipeError, socket.timeout) as exc:
            raise self._lost(exc) from exc

    def _write_file(self, path: str, content: bytes, mode: int) -> None:
        sftp = self.client.open_sftp()
        try:
            tmp = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
            with sftp.open(tmp, "wb") as fh:
                sftp.chmod(tmp, mode)
                fh.write(content)
                fh.flush()
            sftp.posix_rename(tmp, path)
        finally:
            sftp.close()

    def read_file(self, path: str) -> bytes | None:
        sftp = self.client.open_sftp()
        try:
            with sftp.open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None
        finally:
            sftp.close()


class _ChannelWriter:
    """Just enough of a binary file for tarfile's stream mode."""

    def __init__(self, chan):
        self.chan = chan

    def write(self, data) -> int:
        self.chan.sendall(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


def system_ssh_argv(target: Target, *extra) -> list[str]:
    """The system ssh client with the same pinned host key (never trust on first use)."""
    return ["ssh", "-i", str(target.key_file), "-p", str(target.port), "-o", f"UserKnownHostsFile={target.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", *extra,
            f"{target.user}@{target.host}"]
