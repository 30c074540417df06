"""Benchmark deploys to the simulated VPS: time per step, bytes shipped, requests dropped while a
deploy replaces the API, and the smoke suite's time.

    .venv/bin/python scripts/bench_deploy.py [--json build/bench.json]

Three deploys in a row: whatever is needed to bring the current sources up; the same inputs again
(no change); a code-only change of the API (a comment in a copy of its context), during which a
client polls https://api.<domain>/health through Caddy every 50 ms and counts failures.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit import deploy, inventory, render  # noqa: E402
from opskit.layout import Layout, compose_argv  # noqa: E402
from opskit.runner import Runner  # noqa: E402
from opskit.sources import source_revision  # noqa: E402
from opskit.ssh import Connection  # noqa: E402


def load(raw: dict, name: str):
    return inventory.parse(raw, name, base=ROOT)


def run_deploy(env, label: str, results: list) -> deploy.Outcome:
    release = render.render(env)
    with Connection(env.ssh) as conn:
        runner = Runner(conn, out=open("/dev/null", "w"))
        outcome = deploy.deploy(env, release, conn, runner, deploy.Options(), source_revision(ROOT))
    results.append({"deploy": label, **outcome.as_dict()})
    return outcome


class Poller(threading.Thread):
    """GET /health through Caddy every 50 ms; a non-200 or a connection error counts as dropped.
    A request may take up to 30 s (as a browser would wait); the slowest one is recorded."""

    def __init__(self, env, ca_file: str):
        super().__init__(daemon=True)
        self.env, self.ca = env, ca_file
        self.sent = self.dropped = 0
        self.reasons: dict = {}
        self.slowest = 0.0
        self.stop = threading.Event()

    def run(self):
        context = ssl.create_default_context(cafile=self.ca)
        port = self.env.vps.https_port if self.env.vps else 443
        while not self.stop.is_set():
            self.sent += 1
            started, reason = time.monotonic(), None
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)
                conn.sock = context.wrap_socket(sock, server_hostname=self.env.domains.api)
                conn.request("GET", "/health", headers={"Host": self.env.domains.api})
                status = conn.getresponse().status
                if status != 200:
                    reason = f"HTTP {status}"
                conn.close()
            except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
                reason = type(exc).__name__
            self.slowest = max(self.slowest, time.monotonic() - started)
            if reason:
                self.dropped += 1
                self.reasons[reason] = self.reasons.get(reason, 0) + 1
            time.sleep(0.05)


def caddy_root_ca(env, folder: Path) -> str:
    path = folder / "caddy-root.crt"
    with Connection(env.ssh) as conn:
        done = conn.run(compose_argv(Layout(env.remote_dir).current, "exec", "-T", "caddy", "cat",
                                       "/data/caddy/pki/authorities/local/root.crt"))
    path.write_bytes(done.stdout)
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()

    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    env = load(raw, args.env)
    results: list = []
    work = Path(tempfile.mkdtemp(prefix="opskit-bench-"))
    try:
        run_deploy(env, "bring current sources up", results)
        run_deploy(env, "same inputs again (no change)", results)

        api = work / "api"
        shutil.copytree(env.builds["api"].context, api, ignore=shutil.ignore_patterns("__pycache__"))
        main_py = api / "app/main.py"
        main_py.write_text(main_py.read_text() + f"\n# benchmark change {time.time()}\n")
        changed = copy.deepcopy(raw)
        changed["defaults"]["builds"]["api"]["context"] = str(api)
        poller = Poller(env, caddy_root_ca(env, work))
        poller.start()
        run_deploy(load(changed, args.env), "code-only change of the API", results)
        time.sleep(1)
        poller.stop.set()
        poller.join()
        results[-1]["health_requests"] = {"sent": poller.sent, "dropped": poller.dropped, "reasons": poller.reasons,
                                          "slowest_s": round(poller.slowest, 1)}

        started = time.monotonic()
        smoke = subprocess.run([sys.executable, "-m", "pytest", "tests/smoke", "--env", args.env, "-q"],
                               cwd=ROOT, capture_output=True, text=True)
        results.append({"smoke": {"seconds": round(time.monotonic() - started, 1), "exit": smoke.returncode}})
        # leave the server on the committed sources
        run_deploy(env, "back to the current sources", results)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for r in results:
        if "deploy" in r:
            polled = r.get("health_requests")
            print(f"{r['deploy']}: {r['seconds']:.1f}s, {r['bytes_shipped'] / 1e6:.1f} MB shipped"
                  + (f", {polled['dropped']}/{polled['sent']} health requests dropped {polled['reasons']}, "
                     f"slowest {polled['slowest_s']}s" if polled else ""))
            for step in r["steps"]:
                if step["seconds"] >= 1:
                    print(f"    {step['seconds']:7.1f}s  {step['title']}")
        else:
            print(f"smoke suite: {r['smoke']['seconds']}s (exit {r['smoke']['exit']})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
