"""A steady request rate through Caddy (loopback only), for the e2e tier and scripts/bench_deploy.py."""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time

from tests.smoke.web import Web


class Load(threading.Thread):
    """GETs through Caddy at `rate` requests a second, taking the (domain, path) `targets` in turn,
    each on its own connection and thread (a slow answer does not slow the rate); a non-200 or an
    error fails."""

    def __init__(self, web: Web, targets: list[tuple[str, str]], rate: float):
        super().__init__(daemon=True)
        self.web, self.targets, self.rate = web, itertools.cycle(targets), rate
        self.stop = threading.Event()
        self.sent = self.failed = 0
        self.slowest = 0.0
        self.reasons: dict = {}
        self.lock = threading.Lock()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=64)

    def one(self, domain: str, path: str) -> None:
        started, reason = time.monotonic(), None
        try:
            status = self.web.request(domain, path, timeout=30).status
            reason = None if status == 200 else f"HTTP {status} from {domain}{path}"
        except Exception as exc:  # noqa: BLE001  (any failure of a request is counted, by its kind)
            reason = f"{type(exc).__name__} from {domain}{path}"
        with self.lock:
            self.slowest = max(self.slowest, time.monotonic() - started)
            if reason:
                self.failed += 1
                self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            self.sent += 1
            self.pool.submit(self.one, *next(self.targets))
            time.sleep(max(0.0, start + self.sent / self.rate - time.monotonic()))

    def finish(self) -> dict:
        self.stop.set()
        self.join()
        self.pool.shutdown(wait=True)
        return {"sent": self.sent, "failed": self.failed, "slowest_s": round(self.slowest, 3), "reasons": self.reasons}
