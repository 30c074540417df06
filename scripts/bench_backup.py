"""Benchmark backups on the simulated VPS: backup and restore time and size for the sample
database with N rows in `runs` (default 100k), against the same measures at the rows it has now
(the baseline, in the same run), and the time a pre-migration backup adds to a deploy (and what a deploy at head pays: the check alone).

    .venv/bin/python scripts/bench_backup.py [--rows 100000] [--json build/bench-backup.json]

It needs `local` deployed (`scripts/invoke deploy`). It starts a Storage Box beside the VPS
(`opskit.sim.storage_box`), deploys `local` with a `backup:` section (an inventory copy in a
temporary folder), measures, then deploys `local` back and removes the box. The rows it adds stay.
Traffic stays between this machine's loopback and the project's containers.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opskit import deploy, render  # noqa: E402
from opskit.backup import commands, settings  # noqa: E402
from opskit.runner import Runner  # noqa: E402
from opskit.sim import storage_box  # noqa: E402
from opskit.sim.secrets import load as load_with_secrets  # noqa: E402
from opskit.sources import source_revision  # noqa: E402
from opskit.ssh import Connection  # noqa: E402
from tests.e2e.live import inventory_copy  # noqa: E402

ENV = "backup"


def timed(fn):
    started = time.monotonic()
    value = fn()
    return time.monotonic() - started, value


def measure(env, conn, label: str) -> dict:
    quiet = Runner(conn, out=open(os.devnull, "w"))
    release = deploy.gather(env, conn).current or "none"
    backup_s, stamp = timed(lambda: commands.backup(env, conn, quiet, release))
    root = settings.settings(env).set_folder(stamp)
    manifest = json.loads(conn.run(["cat", f"{root}/manifest.json"]).stdout)
    drill_s, report = timed(lambda: commands.drill(env, quiet))
    assert report.ok, report.summary()
    # what a deploy pays when the head moves: its backup step as the deploy runs it (guard included)
    step = deploy.backup_before_migrating(env, f"{env.remote_dir}/current")
    guard_s, _ = timed(lambda: conn.run(step.argv, timeout=3600))  # at head: the check alone, no backup
    guarded = step.argv[2].replace('case $cur in *"(head)"*)', 'case $cur in *"(never)"*)')
    assert guarded != step.argv[2], "the guard's head test is not where the benchmark expects it"
    added_s, _ = timed(lambda: conn.run(["sh", "-c", guarded], timeout=3600))
    row = {"label": label, "rows_runs": manifest["rows"].get("public.runs"), "dump_bytes": manifest["dump"]["size"],
           "backup_s": round(backup_s, 2), "drill_s": round(drill_s, 2), "deploy_backup_s": round(added_s, 2),
           "deploy_guard_only_s": round(guard_s, 2)}
    print(json.dumps(row), flush=True)
    return row


def add_rows(env, conn, n: int) -> None:
    pg = env.postgres
    sql = (f"INSERT INTO runs (id, status, task_id) SELECT gen_random_uuid(), 'done', md5(i::text) "
           f"FROM generate_series(1, {n}) AS i")
    container = conn.run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={env.project}",
                          "--filter", "label=com.docker.compose.service=postgres"]).stdout.decode().strip()
    done = conn.run(["docker", "exec", container, "psql", "-X", "-q", "-U", pg.admin_role, "-d", pg.database,
                     "-c", sql], timeout=600)
    assert done.returncode == 0, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        box = storage_box.up(folder)
        try:
            os.environ.update({"OPSKIT_BENCH_RESTIC_PASSWORD": secrets.token_urlsafe(24),
                               "OPSKIT_BENCH_RESTIC_SSH_KEY": box.key_file.read_text(),
                               "OPSKIT_BENCH_RESTIC_KNOWN_HOSTS": box.known_hosts})

            def edit(raw):
                env = copy.deepcopy(raw["environments"]["local"])
                env["backup"] = {"repository": box.repository("bench")}
                env.setdefault("secrets", {}).update({n: f"env:OPSKIT_BENCH_{n.upper()}" for n in
                                                      ("restic_password", "restic_ssh_key", "restic_known_hosts")})
                raw["environments"][ENV] = env

            env = load_with_secrets(ENV, path=inventory_copy(folder, edit))
            with Connection(env.ssh) as conn:
                deploy.deploy(env, render.render(env), conn, Runner(conn), deploy.Options(), source_revision(ROOT))
                baseline = measure(env, conn, "baseline (rows as they are)")
                add_rows(env, conn, args.rows)
                loaded = measure(env, conn, f"+{args.rows} rows in runs")
                ratios = {k: round(loaded[k] / baseline[k], 2) for k in ("dump_bytes", "backup_s", "drill_s",
                                                                          "deploy_backup_s", "deploy_guard_only_s")
                          if baseline[k]}
                print(json.dumps({"ratio_to_baseline": ratios}))
                local = load_with_secrets("local")
                deploy.deploy(local, render.render(local), conn, Runner(conn), deploy.Options(),
                              source_revision(ROOT))
        finally:
            storage_box.down()
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline": baseline, "loaded": loaded, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
