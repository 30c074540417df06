"""A tiny HTTP server standing in for the stack's upstreams behind Caddy: SSE and plain streams
with controlled timing, a header echo, and a health route that leaks a Server banner."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"  # the banner Caddy must strip
    #: stream id (the `id` query value) -> [(event line, time.monotonic() when it was written)]
    written: dict = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path in ("/stream", "/plain"):
            return self._stream(url.path == "/stream", query)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, sse: bool, query: dict) -> None:
        """`count` events, `gap` seconds apart, with a heartbeat comment every `heartbeat` seconds;
        with `id`, the time each event was written is kept in `Handler.written[id]`."""
        count, gap = int(query.get("count", 3)), float(query.get("gap", 1))
        heartbeat = float(query.get("heartbeat", 0)) or None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if sse else "text/plain")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._chunk(": connected\n\n" if sse else "connected\n")
            for i in range(count):
                waited = 0.0
                while heartbeat and waited + heartbeat < gap:
                    time.sleep(heartbeat)
                    waited += heartbeat
                    self._chunk(": keep-alive\n\n" if sse else "keep-alive\n")
                time.sleep(gap - waited)
                self._chunk(f"data: {i}\n\n" if sse else f"line {i}\n")
                if "id" in query:  # when it left this process, for tests timing the proxy
                    self.written.setdefault(query["id"], []).append((f"data: {i}" if sse else f"line {i}",
                                                                     time.monotonic()))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


class Upstream:
    def __init__(self):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
