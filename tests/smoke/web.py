"""HTTP(S) to the server as a browser would reach each domain: connect to the server's address,
present the domain by SNI and Host, verify the certificate for that name (against Caddy's
local CA for `tls: internal`, the system CAs for ACME)."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field


def basic_auth(user, password) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def flower_credentials(env) -> dict:
    return basic_auth(env.flower_user, env.secrets["flower_password"].reveal())


@dataclass
class Response:
    status: int
    headers: dict  # lower-case name -> value (repeated fields joined with ", ")
    body: bytes
    certificate: dict | None = None


class _SNIConnection(http.client.HTTPSConnection):
    """Connects to `address` but presents (and verifies) `server_name`."""

    def __init__(self, address, port, server_name, context, timeout):
        super().__init__(address, port, context=context, timeout=timeout)
        self.server_name = server_name

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)


class Web:
    def __init__(self, address: str, http_port: int, https_port: int, root_pem: str | None = None):
        self.address, self.http_port, self.https_port = address, http_port, https_port
        self.context = ssl.create_default_context(cadata=root_pem) if root_pem else ssl.create_default_context()
        self.trust = "Caddy's local CA (tls: internal)" if root_pem else "the system CAs"
        self._cache: dict = {}
        self._lock = threading.Lock()

    def where(self, scheme: str = "https") -> str:
        return f"{self.address}:{self.https_port if scheme == 'https' else self.http_port}"

    def connection(self, domain: str, timeout: float = 10) -> http.client.HTTPConnection:
        return _SNIConnection(self.address, self.https_port, domain, self.context, timeout)

    def request(self, domain: str, path: str, headers=None, method: str = "GET", scheme: str = "https",
                timeout: float = 10, body: bytes | None = None) -> Response:
        if scheme == "https":
            conn = self.connection(domain, timeout)
        else:
            conn = http.client.HTTPConnection(self.address, self.http_port, timeout=timeout)
        try:
            conn.connect()
            cert = conn.sock.getpeercert() if scheme == "https" else None
            conn.request(method, path, body=body, headers={"Host": domain, "Connection": "close", **(headers or {})})
            resp = conn.getresponse()
            merged: dict[str, str] = {}
            for k, v in resp.getheaders():
                merged[k.lower()] = f"{merged[k.lower()]}, {v}" if k.lower() in merged else v
            body = resp.read(1 << 20)
            return Response(resp.status, merged, body, cert)
        finally:
            conn.close()

    def get(self, domain: str, path: str, headers=None, scheme: str = "https") -> Response:
        """A cached GET (each distinct request is sent once per session)."""
        key = (domain, path, tuple(sorted((headers or {}).items())), scheme)
        with self._lock:
            if key not in self._cache:
                try:
                    self._cache[key] = self.request(domain, path, headers, scheme=scheme)
                except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                    self._cache[key] = exc
            value = self._cache[key]
        if isinstance(value, Exception):
            raise value
        return value


@dataclass
class SseResult:
    path: str
    heartbeat: float
    status: int | None = None
    content_type: str = ""
    connected_at: float | None = None
    keepalives: list = field(default_factory=list)  # seconds since the request
    triggered_at: float | None = None
    trigger_error: str | None = None
    event_at: float | None = None
    event: str | None = None
    closed_at: float | None = None  # the server (or Caddy) ended the stream
    error: str | None = None
    body: str = ""

    @property
    def open_for(self) -> float:
        ends = [t for t in (self.closed_at, self.event_at) if t is not None]
        return max(ends) if ends else (self.keepalives[-1] if self.keepalives else 0.0)


def sse_check(web: Web, domain: str, path: str, headers: dict, heartbeat: float, bound: float,
              trigger, run_id: str) -> SseResult:
    """Open `path` as an SSE client through Caddy; once two `: keep-alive` comments arrived
    (the stream outlived two heartbeats), call `trigger()` (which makes a Celery task publish
    for `run_id`) and wait up to `bound` seconds for its `data:` event."""
    result = SseResult(path, heartbeat)
    idle = heartbeat * 1.5 + 3  # no line for this long means the stream stalled
    start = time.monotonic()
    conn = web.connection(domain, timeout=idle)
    deadline = None
    try:
        conn.request("GET", path, headers={"Host": domain, "Accept": "text/event-stream", **headers})
        resp = conn.getresponse()
        result.status = resp.status
        result.content_type = resp.getheader("content-type", "")
        if resp.status != 200:
            result.body = resp.read(500).decode(errors="replace")
            return result
        while True:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                conn.sock.settimeout(min(left, idle))
            line = resp.readline()
            now = time.monotonic() - start
            if not line:
                result.closed_at = now
                break
            text = line.decode(errors="replace").strip()
            if text.startswith(": connected"):
                result.connected_at = now
            elif text.startswith(": keep-alive"):
                result.keepalives.append(now)
                if len(result.keepalives) == 2 and result.triggered_at is None:
                    result.triggered_at = now
                    try:
                        trigger()
                    except Exception as exc:  # reported by the test, with its cause
                        result.trigger_error = f"{type(exc).__name__}: {exc}"
                        break
                    deadline = time.monotonic() + bound
            elif text.startswith("data:") and run_id in text:
                result.event_at, result.event = now, text
                break
    except (socket.timeout, TimeoutError):
        if deadline is not None and time.monotonic() >= deadline - 0.05:
            pass  # the event did not come in time: the test says so
        else:
            result.error = f"the stream went silent: no line for {idle:.0f}s"
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.closed_at = time.monotonic() - start
    finally:
        conn.close()
    return result
