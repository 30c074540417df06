"""Benchmark deploys to the simulated VPS, as ratios against baselines measured in the same run.

    .venv/bin/python scripts/bench_deploy.py [--json build/bench-deploy.json] [--deploys 10]

Prints one JSON object: for each measure its value, its baseline, the ratio and the goal
(issue 15's table). The measures:

- bytes shipped for a code-only change of the API (a comment in a copy of its context), against
  the bytes of the layers the server lacked (the image's layers not on the server before it);
- that deploy's wall time without its build steps, against `compose up -d --force-recreate --wait`
  of the same services with the images present, under the same load (what that stop-first `up`
  does to the requests is printed beside it);
- failed and slowest `/health` requests through Caddy at a steady rate (default 25/s) during that
  deploy, against the same load for the same time with no deploy;
- a no-op deploy (inputs unchanged, all healthy), against one SSH round trip;
- the project's images on the server after `--deploys` code-only deploys, against the images
  that the kept releases name.

Traffic goes to 127.0.0.1 only. The server is left on the committed sources.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit import deploy, inventory, render, ship  # noqa: E402
from opskit.errors import StepFailed  # noqa: E402
from opskit.layout import Layout, compose_argv  # noqa: E402
from opskit.runner import Runner  # noqa: E402
from opskit.sources import source_revision  # noqa: E402
from opskit.ssh import Connection  # noqa: E402
from tests.e2e.load import Load  # noqa: E402
from tests.smoke.web import Web  # noqa: E402

BUILD_STEPS = ("build ", "import checks", "tag ", "prisma guard")


def load(raw: dict, name: str):
    return inventory.parse(raw, name, base=ROOT)


def run_deploy(env, conn) -> deploy.Outcome:
    return deploy.deploy(env, render.render(env), conn, Runner(conn, out=open("/dev/null", "w")), deploy.Options(),
                         source_revision(ROOT))


def code_change(raw: dict, work: Path, n: int) -> dict:
    """The inventory with the API's context a copy of it, changed by one comment."""
    api = work / f"api-{n}"
    shutil.copytree(ROOT / raw["defaults"]["builds"]["api"]["context"], api,
                    ignore=shutil.ignore_patterns("__pycache__"))
    main_py = api / "app/main.py"
    main_py.write_text(main_py.read_text() + f"\n# benchmark change {n} {time.time()}\n")
    changed = copy.deepcopy(raw)
    changed["defaults"]["builds"]["api"]["context"] = str(api)
    return changed


def lacking_bytes(image: str, server_layers, work: Path) -> int:
    """The bytes of `image`'s layers (uncompressed) whose chain IDs the server did not have."""
    tar = work / "image.tar"
    subprocess.run(["docker", "save", "-o", str(tar), image], check=True, capture_output=True)
    try:
        with tarfile.open(tar, "r:") as src:
            paths = ship.layer_paths(src)
            return sum(m.size for m in src.getmembers() if m.name in paths and paths[m.name] not in server_layers)
    finally:
        tar.unlink()


def timed(fn) -> tuple[float, object]:
    started = time.monotonic()
    result = fn()
    return time.monotonic() - started, result


def project_images(env, conn) -> tuple[set, set]:
    """(this project's built images on the server, those the kept releases' compose files name)."""
    repos = sorted({b.repository for b in env.builds.values()})
    listed = conn.run(["sh", "-c", 'for r; do docker image ls --format "{{.Repository}}:{{.Tag}}" "$r"; done',
                       "sh", *repos]).stdout.decode().split()
    releases = Layout(env.remote_dir).releases
    named = conn.run(["sh", "-c", f'for f in {releases}/*/docker-compose.yml; do docker compose -f "$f" config '
                                  '--images; done']).stdout.decode().split()
    return set(listed), {ref for ref in named if ref.rpartition(":")[0] in repos}


def measure(value, baseline, goal: str, ok: bool, **more) -> dict:
    ratio = round(value / baseline, 3) if isinstance(baseline, (int, float)) and baseline else None
    return {"value": value, "baseline": baseline, "ratio": ratio, "goal": goal, "met": ok, **more}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="local")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--deploys", type=int, default=10, help="code-only deploys before the images are counted")
    parser.add_argument("--rate", type=float, default=25.0, help="requests a second through Caddy")
    parser.add_argument("--quiet", type=float, default=20.0, help="seconds of the same load with no deploy")
    args = parser.parse_args()

    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    env = load(raw, args.env)
    work = Path(tempfile.mkdtemp(prefix="opskit-bench-"))
    out: dict = {}
    try:
        with Connection(env.ssh) as conn:
            run_deploy(env, conn)  # the committed sources, whatever it takes
            root_pem = conn.run(compose_argv(Layout(env.remote_dir).current, "exec", "-T", "caddy", "cat",
                                             "/data/caddy/pki/authorities/local/root.crt")).stdout.decode()
            web = Web("127.0.0.1", env.vps.http_port if env.vps else 80, env.vps.https_port if env.vps else 443,
                      root_pem=root_pem)

            # a no-op deploy against one SSH round trip, on the same open connection
            trip = min(timed(lambda: conn.run(["true"]))[0] for _ in range(5))
            noop, outcome = timed(lambda: run_deploy(env, conn))
            out["noop_deploy_s"] = measure(round(noop, 3), round(trip, 3), "<= 1.5 s", noop <= 1.5 and not outcome.steps,
                                           steps=len(outcome.steps))

            # the load alone for a while, then the same load during a code-only deploy
            quiet = Load(web, [(env.domains.api, "/health")], args.rate)
            quiet.start()
            time.sleep(args.quiet)
            quiet_result = quiet.finish()
            changed = load(code_change(raw, work, 0), args.env)
            server_layers = deploy.gather(changed, conn).layers
            busy = Load(web, [(env.domains.api, "/health")], args.rate)
            busy.start()
            deploy_s, outcome = timed(lambda: run_deploy(changed, conn))
            busy_result = busy.finish()
            image = outcome.images["api"]
            lacking = lacking_bytes(image, server_layers, work)
            out["bytes_shipped_code_only"] = measure(outcome.bytes_shipped, lacking, "<= 1.05 x",
                                                     outcome.bytes_shipped <= 1.05 * lacking)
            build_s = sum(s for t, s in outcome.steps if t.startswith(BUILD_STEPS))
            services = sorted(s for s, ref in outcome.images.items() if ref == image)
            up = compose_argv(Layout(env.remote_dir).current, "up", "-d", "--force-recreate", "--wait", *services)
            # the baseline under the same load as the deploy: both share the machine with it alike
            baseline_load = Load(web, [(env.domains.api, "/health")], args.rate)
            baseline_load.start()
            baseline_up = timed(lambda: conn.run(up, timeout=600))[0]
            baseline_result = baseline_load.finish()
            without_build = deploy_s - build_s
            out["code_only_deploy_without_build_s"] = measure(
                round(without_build, 2), round(baseline_up, 2), "<= 1.5 x", without_build <= 1.5 * baseline_up,
                build_s=round(build_s, 2), services=services, load_during_baseline=baseline_result,
                slowest_steps=sorted(([t, round(s, 2)] for t, s in outcome.steps), key=lambda x: -x[1])[:6])
            out["failed_requests_during_deploy"] = measure(
                busy_result["failed"], quiet_result["failed"], "0", busy_result["failed"] == 0,
                load={"rate_per_s": args.rate, "during_deploy": busy_result, "quiet": quiet_result,
                      "quiet_seconds": args.quiet})
            out["slowest_request_during_deploy_s"] = measure(busy_result["slowest_s"], quiet_result["slowest_s"],
                                                             "<= 1 s", busy_result["slowest_s"] <= 1.0)

            # images after N code-only deploys
            failed = []  # a deploy that fails is a finding too: its step, and the loop goes on
            for n in range(1, args.deploys):
                try:
                    run_deploy(load(code_change(raw, work, n), args.env), conn)
                except StepFailed as failure:
                    failed.append(f"deploy {n + 1}: {failure.step.title}: {str(failure)[-300:]}")
            on_server, kept = project_images(env, conn)
            out["images_after_code_only_deploys"] = measure(
                len(on_server), len(kept), "equal", on_server == kept, deploys=args.deploys,
                extra=sorted(on_server - kept), missing=sorted(kept - on_server), failed_deploys=failed)
            run_deploy(env, conn)  # leave the server on the committed sources
    finally:
        shutil.rmtree(work, ignore_errors=True)

    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
