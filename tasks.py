"""opskit tasks: `invoke --list` shows them, `invoke --help TASK` explains each option.

A thin face: each task parses its flags, calls one function in `opskit/`, prints the outcome.
`-e/--env` picks the environment from inventory.yaml; `local` (the simulated VPS) is the default.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import time
from pathlib import Path

from invoke import Collection, Exit, task

from opskit import ROOT, db, deploy as deploying, inventory, release_folder
from opskit.backup import commands as backups, snapshots
from opskit import render as rendering, smoke as smoking
from opskit.sim import kit, vps
from opskit.errors import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_SMOKE_FAILED, OpskitError
from opskit.layout import Layout, compose_argv
from opskit.runner import Runner
from opskit.sim.secrets import load as load_with_secrets
from opskit.steps import Plan
from opskit.sources import source_revision
from opskit.ssh import Connection, system_ssh_argv

ENV_HELP = "environment from inventory.yaml (default: local, the simulated VPS)"
#: another inventory file for every task (as the smoke suite's --inventory); default: the repository's
INVENTORY = os.environ.get("OPSKIT_INVENTORY") or None


def reports_errors(fn):
    """Turn an OpskitError into its message and exit code (no traceback for a person to read)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OpskitError as exc:
            raise Exit(f"error: {exc}", code=exc.exit_code) from None

    return wrapper


@task(help={"env": ENV_HELP, "out": "release folder to write (default: build/ENV)"})
@reports_errors
def render(c, env="local", out=None):
    """Render the release (compose file, Caddyfile, env files, SQL) into build/ENV."""
    environment = load_with_secrets(env, path=INVENTORY)
    release = rendering.render(environment)
    folder = release_folder.write(release, Path(out) if out else Path("build") / env)
    print(f"release {release.id} for {env} written to {folder}/ ({len(release.files)} files)")


@task(help={"env": ENV_HELP, "against": "release folder to compare with (default: build/ENV)",
            "server": "compare with the release the server runs instead"})
@reports_errors
def diff(c, env="local", against=None, server=False):
    """Show what a new render would change against a release folder, or against the server."""
    environment = load_with_secrets(env, path=INVENTORY)
    release = rendering.render(environment)
    if server:
        with Connection(environment.ssh) as conn:
            old, label = deploying.current_files(environment, conn), f"{environment.ssh.host}:current"
    else:
        folder = Path(against) if against else Path("build") / env
        if not folder.is_dir():
            raise Exit(f"error: no release folder at {folder}: run `invoke render -e {env}` first, "
                       "or pass --against DIR or --server", code=EXIT_BAD_INPUT)
        old, label = release_folder.read(folder), str(folder)
    text = rendering.diff(release, old, old_label=label)
    print(text or f"no change: {label} matches a new render (release {release.id})", end="" if text else "\n")


@task(help={"env": "check only this environment (default: all of them)"})
@reports_errors
def check(c, env=None):
    """Validate inventory.yaml (every environment, or one) without touching anything."""
    names = [inventory.load(env, path=INVENTORY, with_secrets=False).name] if env else inventory.check(INVENTORY)
    for name in names:
        print(f"{name}: valid")


def simulated_vps_ready(environment, dry_run: bool) -> bool:
    """For an environment with a simulated VPS (`local`): bring it up and provision it when it is
    not running provisioned, saying so and how long it took. Other environments are real servers:
    nothing to bring up (`invoke provision` prepares them)."""
    if environment.vps is None:
        return True
    config = vps.VpsConfig.from_environment(environment)
    now = vps.status(config)
    if now.state == "running" and now.provisioned and now.host_key_pinned:
        return True
    print(f"the simulated VPS is not ready ({now}): bringing it up and provisioning it first "
          "(the image kit, the VPS and `invoke provision`: minutes from nothing)", file=sys.stderr)
    if dry_run:
        print("(dry run: it is not brought up, and there is no server to plan against yet)", file=sys.stderr)
        return False
    started = time.monotonic()
    vps.up_provisioned(environment)
    print(f"the simulated VPS is up and provisioned in {time.monotonic() - started:.0f}s; now the deploy",
          file=sys.stderr)
    return True


def keep_copy(release, folder: Path) -> None:
    """The deployed release, kept in build/ENV for `invoke diff`; a folder opskit did not make stays as it is."""
    why = release_folder.refusal(folder)
    if why:
        print(f"note: the release is not copied to {folder}: {why}", file=sys.stderr)
        return
    release_folder.write(release, folder)


def confirm(environment, yes: bool, what: str) -> None:
    """Real servers need a yes; without a terminal nothing waits for one (CI passes --yes)."""
    if yes or environment.vps is not None:
        return
    if not sys.stdin.isatty():
        raise Exit(f"error: {what} on {environment.name} needs confirmation: pass --yes", code=EXIT_BAD_INPUT)
    if input(f"{what} on {environment.name} ({environment.ssh})? [y/N] ").strip().lower() not in ("y", "yes"):
        raise Exit("cancelled", code=EXIT_ERROR)


@task(help={"env": ENV_HELP, "junit": "write JUnit XML to this file", "k": "only checks matching this expression",
            "m": "only these groups (markers: host, containers, exposure, http, postgres, celery, logs, files)"})
def smoke(c, env="local", junit=None, k=None, m=None):
    """Check the deployed server with the testinfra smoke suite (tests/smoke)."""
    extra = (["-k", k] if k else []) + (["-m", m] if m else [])
    code = smoking.run(env, junit=junit, extra=extra)
    if code != 0:
        raise Exit(f"smoke: the server of {env} fails its checks (pytest exit {code})", code=EXIT_SMOKE_FAILED)


@task(help={"env": ENV_HELP, "dry_run": "print the plan (and what a failure would do), change nothing",
            "rebuild": "build images even when their inputs are unchanged",
            "break_lock": "break a stale deploy lock (its holder stopped renewing its lease; a live one stays)",
            "force": "redeploy even when the release is already current",
            "smoke": "run the smoke suite after the deploy (default on; --no-smoke skips it)",
            "json": "also write a JSON summary to this file", "yes": "do not ask for confirmation",
            "skip_backup": "migrate without the backup that comes first when the Alembic head moves (logged)"})
@reports_errors
def deploy(c, env="local", dry_run=False, rebuild=False, break_lock=False, force=False, smoke=True, json=None,
           yes=False, skip_backup=False):
    """Build (no cache), check, ship and start the stack; roles and migrations run before traffic moves."""
    environment = load_with_secrets(env, path=INVENTORY)
    release = rendering.render(environment)
    if not dry_run:
        confirm(environment, yes, f"deploy release {release.id}")
        keep_copy(release, Path("build") / env)
    if not simulated_vps_ready(environment, dry_run):
        return
    options = deploying.Options(rebuild=rebuild, break_lock=break_lock, force=force, skip_backup=skip_backup)
    if skip_backup and environment.backup is not None:
        print(f"--skip-backup: {env} migrates WITHOUT a backup first (asked for by {options.holder})", file=sys.stderr)
    with Connection(environment.ssh) as conn:
        runner = Runner(conn, dry_run=dry_run)
        outcome = deploying.deploy(environment, release, conn, runner, options, source_revision(ROOT))
    if outcome is None or dry_run:  # a dry run checks nothing on the server either
        if outcome is not None:
            print(outcome.summary())
        return
    print(outcome.summary())
    checked = smoking.run(env) if smoke else None
    if json:
        import json as _json

        summary = {**outcome.as_dict(), "smoke": None if checked is None else ("passed" if checked == 0 else "failed")}
        Path(json).write_text(_json.dumps(summary, indent=2) + "\n")
    if checked:
        raise Exit(f"deployed release {outcome.release}, but the smoke suite fails: see above", code=EXIT_SMOKE_FAILED)


@task(help={"env": ENV_HELP, "dry_run": "read the server and print what would change, change nothing",
            "yes": "do not ask for confirmation"})
@reports_errors
def provision(c, env="local", dry_run=False, yes=False):
    """Converge the server to a hardened host that deploys: Docker, the deploy user, firewall, sshd,
    upgrades, swap, journald (a second run changes nothing and says so)."""
    environment = inventory.load(env, path=INVENTORY, with_secrets=False)
    if not dry_run:
        confirm(environment, yes, "provision")
    from opskit.provision.run import provision as converge  # its items load only when asked for

    converge(environment, dry_run=dry_run)


@task(help={"env": ENV_HELP, "to": "release id to return to (default: the one before current)",
            "dry_run": "print the plan, change nothing", "yes": "do not ask for confirmation"})
@reports_errors
def rollback(c, env="local", to=None, dry_run=False, yes=False):
    """Serve the previous (or a given) release again, in seconds, without a build."""
    environment = load_with_secrets(env, path=INVENTORY)
    if not dry_run:
        confirm(environment, yes, "roll back")
    with Connection(environment.ssh) as conn:
        release = deploying.rollback(environment, conn, Runner(conn, dry_run=dry_run), to)
    if not dry_run:
        print(f"{env} now serves release {release}")


@task(help={"env": ENV_HELP})
@reports_errors
def status(c, env="local"):
    """Current release, each service's state, health and age, and (ACME) certificates Caddy could not get."""
    from opskit import status as st

    environment = inventory.load(env, path=INVENTORY, with_secrets=False)
    with_acme = environment.tls.is_acme
    with Connection(environment.ssh) as conn:
        done = conn.run(st.status_argv(environment.remote_dir, environment.project, with_acme), timeout=60)
    print(st.table(st.parse_status(done.stdout.decode(errors="replace"), with_acme)))


@task(help={"env": ENV_HELP, "since": "only logs newer than this (e.g. 10m, 2h)",
            "follow": "keep following (default on; --no-follow to print and stop)"})
@reports_errors
def logs(c, service, env="local", since="10m", follow=True):
    """Logs of one service of the current release (`invoke logs worker`)."""
    environment = inventory.load(env, path=INVENTORY, with_secrets=False)
    current = Layout(environment.remote_dir).current
    argv = compose_argv(current, "logs", "--since", since, *(["--follow"] if follow else []), service)
    with Connection(environment.ssh) as conn:
        done = conn.run(argv, on_line=print)
    if done.returncode != 0:
        raise Exit(f"error: logs of {service} failed (exit {done.returncode})", code=done.returncode)


@task(name="ssh", help={"env": ENV_HELP})
@reports_errors
def ssh_shell(c, env="local"):
    """Open a shell on the server (host key checked against the pinned known_hosts)."""
    environment = inventory.load(env, path=INVENTORY, with_secrets=False)
    os.execvp("ssh", system_ssh_argv(environment.ssh))


def _db_step(env: str, title: str, step_for, report) -> None:
    """Run one database step against the current release and print what it changed."""
    environment = load_with_secrets(env, path=INVENTORY)
    folder = Layout(environment.remote_dir).current
    with Connection(environment.ssh) as conn:
        [done] = Runner(conn).run(Plan(f"{title} on {env}", [step_for(environment, folder)]))
    print(report(done.output).summary())


@task(help={"env": ENV_HELP})
@reports_errors
def roles(c, env="local"):
    """Create or update the admin and UI roles and their grants (idempotent; says "no change")."""
    # inline: the script from this inventory, not the server's copy from the last deploy
    _db_step(env, "db.roles", lambda e, folder: db.roles_step(e, folder, inline=True), db.roles_result)


@task(help={"env": ENV_HELP})
@reports_errors
def migrate(c, env="local"):
    """Run `alembic upgrade head` in the current release's API image, as the admin role."""
    _db_step(env, "db.migrate", db.migrate_step, db.migrate_result)


@task(help={"env": ENV_HELP, "dry_run": "print the plan, change nothing",
            "download": "also copy the set (dump, sha256, manifest) to this folder here, checked"})
@reports_errors
def backup(c, env="local", dry_run=False, download=None):
    """Dump the database on the server (manifest, sha256), send it off the server with restic, apply retention."""
    environment = load_with_secrets(env, path=INVENTORY)
    with Connection(environment.ssh) as conn:
        release = deploying.gather(environment, conn).current or "none"
        backups.backup(environment, conn, Runner(conn, dry_run=dry_run), release, download)


@task(name="backups", help={"env": ENV_HELP})
@reports_errors
def list_backups(c, env="local"):
    """List the off-server backups: time, release, Alembic revision, size, newest first."""
    environment = load_with_secrets(env, path=INVENTORY)
    with Connection(environment.ssh) as conn:
        found = backups.listing(environment, Runner(conn, out=sys.stderr))
    print(snapshots.table(found))


@task(help={"env": ENV_HELP, "snapshot": "restic snapshot id or its prefix (default: latest)",
            "dry_run": "print the steps, change nothing",
            "live": "restore INTO the live database (app stopped, current state backed up first, smoke after)",
            "yes": "with --live and no terminal: do not ask for the environment's name"})
@reports_errors
def restore(c, env="local", snapshot="latest", dry_run=False, live=False, yes=False):
    """Drill by default: restore a backup into a scratch database, check it against its manifest, drop it.
    --live restores into the live database (guarded: type the environment's name)."""
    environment = load_with_secrets(env, path=INVENTORY)
    if live and not dry_run:
        confirm_by_name(environment, yes)
    with Connection(environment.ssh) as conn:
        runner = Runner(conn, dry_run=dry_run)
        if not live:
            report = backups.drill(environment, runner, snapshot)
            if not dry_run:
                print(report.summary())
                if not report.ok:
                    raise Exit(f"the drill failed at {report.failed.name if report.failed else 'an unknown check'}",
                               code=EXIT_ERROR)
            return
        release = deploying.gather(environment, conn).current or "none"
        folder = Layout(environment.remote_dir).current
        outcome = backups.restore_live(environment, runner, db.roles_step(environment, folder), release, snapshot)
    if not outcome.ok:
        raise Exit(f"the live restore failed at {outcome.failed}", code=EXIT_ERROR)
    if not dry_run and smoking.run(env) != 0:
        raise Exit("restored, but the smoke suite fails: see above", code=EXIT_SMOKE_FAILED)


def confirm_by_name(environment, yes: bool) -> None:
    """The live database is replaced: its environment's name typed back, or --yes without a terminal."""
    if not sys.stdin.isatty():
        if yes:
            return
        raise Exit(f"error: db.restore --live on {environment.name} replaces its database: pass --yes as well "
                   "(no terminal to type the name in)", code=EXIT_BAD_INPUT)
    typed = input(f"db.restore --live REPLACES the database of {environment.name} ({environment.ssh}).\n"
                  f"Type the environment's name to go on: ").strip()
    if typed != environment.name:
        raise Exit("cancelled: the name typed is not the environment's", code=EXIT_ERROR)


@task(help={"env": ENV_HELP, "port": "local port (default: the inventory's published Postgres port)"})
@reports_errors
def tunnel(c, env="local", port=None):
    """Forward Postgres (published on the server's loopback) to this machine's loopback."""
    environment = inventory.load(env, path=INVENTORY, with_secrets=False)
    pg = environment.postgres
    local = int(port or pg.publish_port)
    print(f"postgresql://{pg.admin_role}@127.0.0.1:{local}/{pg.database} (Ctrl-C to close)")
    os.execvp("ssh", system_ssh_argv(environment.ssh, "-N", "-L", f"127.0.0.1:{local}:{pg.publish_host}:{pg.publish_port}"))


@task(name="build", help={"rebuild": "build every image again, without the layer cache",
                          "dry_run": "print the plan, build nothing"})
@reports_errors
def kit_build(c, rebuild=False, dry_run=False):
    """Build the offline image kit (Debian-based stand-ins for postgres, redis, caddy, python, node, the VPS)."""
    kit.build_kit(rebuild=rebuild, dry_run=dry_run)


def _vps_config(env: str):
    return vps.VpsConfig.from_environment(inventory.load(env, path=INVENTORY, with_secrets=False))


@task(name="up", help={"env": ENV_HELP, "bare": "a fresh server as the provider hands it over: sshd and root's "
                       "key only, not provisioned", "dry_run": "print the plan, change nothing"})
@reports_errors
def vps_up(c, env="local", bare=False, dry_run=False):
    """Start the simulated VPS (idempotent), pin its host key, and provision it unless --bare."""
    environment = inventory.load(env, path=INVENTORY, with_secrets=False)
    if bare:
        vps.up(vps.VpsConfig.from_environment(environment), dry_run=dry_run)
    else:
        vps.up_provisioned(environment, dry_run=dry_run)


@task(name="down", help={"env": ENV_HELP, "dry_run": "print the plan, change nothing"})
@reports_errors
def vps_down(c, env="local", dry_run=False):
    """Remove the simulated VPS with its volumes and its pinned host key."""
    vps.down(_vps_config(env), dry_run=dry_run)


@task(name="status", help={"env": ENV_HELP})
@reports_errors
def vps_status(c, env="local"):
    """Say whether the simulated VPS runs, and how to reach it."""
    print(vps.status(_vps_config(env)))


@task(help={"tier": "unit, integration, e2e or all (default)", "k": "only tests matching this expression",
            "junit": "write JUnit XML to this file"})
def test(c, tier="all", k=None, junit="build/test-results.xml"):
    """Run the tests (all tiers by default); a run that collects no test fails."""
    if tier == "all" and not k:  # the integration tier beside the e2e tier (tests/tiers.py)
        args = [sys.executable, "-m", "tests.tiers", junit]
    else:
        paths = {"all": ["tests/unit", "tests/integration", "tests/e2e"]}.get(tier, [f"tests/{tier}"])
        args = [sys.executable, "-m", "pytest", *paths, f"--junitxml={junit}", *(["-k", k] if k else [])]
    # pytest's own exit code goes out as it is: 5 (no tests collected) fails like any other
    result = c.run(" ".join(shlex.quote(a) for a in args), warn=True, pty=False)
    if result.exited != 0:
        raise Exit(f"tests failed (pytest exit code {result.exited})", code=result.exited)


ns = Collection(render, diff, check, provision, deploy, rollback, smoke, status, logs, ssh_shell, test)
ns.add_collection(Collection("kit", kit_build))
ns.add_collection(Collection("vps", vps_up, vps_down, vps_status))
db_tasks = Collection("db", roles, tunnel, backup, list_backups, restore)
db_tasks.add_task(migrate, default=True)  # `invoke db` means `invoke db.migrate`
ns.add_collection(db_tasks)
