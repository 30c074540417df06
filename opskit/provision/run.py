"""The run of `invoke provision`: log in, read every item's facts, print the differences, run the
steps, read again (see the package's docstring for the items and their order)."""


from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import paramiko

from ..errors import AuthenticationRefused, NotConverged, OpskitError, ProvisionRefused
from ..facts import packages as package_facts
from ..facts.base import read
from ..inventory.model import Target
from ..runner import Runner
from ..ssh import Connection
from ..steps import Plan
from . import accounts, backup_timer, distros, dockerd, firewall, guard, memory, packages, sshd, upgrades
from .item import PROVISIONED, Host, ItemPlan, Wanted, put

ITEMS = (memory, dockerd, packages, accounts, upgrades, firewall, sshd, backup_timer)


@dataclass(frozen=True)
class Report:
    login: str  # who provisioning logged in as
    plans: tuple  # ItemPlan of each item, as found before the run
    seconds: float
    dry_run: bool

    @property
    def changed(self) -> bool:
        return any(p.changes for p in self.plans)

    def __str__(self) -> str:
        done = "would change" if self.dry_run else "changed"
        count = sum(1 for p in self.plans if p.changes)
        what = f"{count} of {len(self.plans)} items {done}" if count else f"no change in any of {len(self.plans)} items"
        return f"provision: {what} ({self.seconds:.1f}s, as {self.login})"


def read_keys(settings) -> tuple:
    """The deploy user's public keys as `TYPE BASE64` lines (comments dropped, so the same key always
    gives the same authorized_keys), from the files the inventory names. A missing `X.pub` whose
    private half `X` is here (a CI runner given only the private key) is derived from it."""
    keys, problems = [], []
    for path in settings.authorized_keys:
        try:
            lines = _public_lines(path)
        except (OSError, paramiko.SSHException) as exc:
            problems.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 2 or not parts[0].startswith(("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-", "sk-")):
                problems.append(f"{path}: not a public key line ({line[:20]}...)")
            else:
                keys.append(f"{parts[0]} {parts[1]}")
    if problems or not keys:
        detail = "; ".join(problems) or "no key in them"
        raise ProvisionRefused(f"provision.authorized_keys: the deploy user would have no usable key ({detail}): "
                               "name the .pub files of the keys that deploy (default: ssh.key_file + .pub)")
    return tuple(dict.fromkeys(keys))


def _public_lines(path) -> list[str]:
    private = path.with_suffix("") if path.suffix == ".pub" else None
    if not path.exists() and private is not None and private.is_file():
        key = paramiko.PKey.from_path(private)
        return [f"{key.get_name()} {key.get_base64()}"]
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def connect(env) -> tuple[Connection, str]:
    """The deploy user with sudo when the server lets it in and sudo works; else the bootstrap user."""
    t = env.ssh
    conn = Connection(t, sudo=True)
    try:
        conn.open()
        if conn.run(["true"], timeout=30).returncode == 0:
            return conn, f"{t.user} (sudo)"
        conn.close()
    except AuthenticationRefused:
        pass
    boot = env.provision.bootstrap_user
    conn = Connection(Target(t.host, t.port, boot, t.key_file, t.known_hosts), sudo=boot != "root")
    try:
        conn.open()
    except AuthenticationRefused as exc:
        raise ProvisionRefused(
            f"neither {t.user} (with sudo) nor {boot} can log in to {t.host}:{t.port} with {t.key_file}: {exc}. "
            f"A new server lets {boot} in with the key chosen at its creation; a provisioned one lets {t.user} in"
        ) from None
    return conn, boot


def plan_all(conn, host: Host) -> list[ItemPlan]:
    """Every item's plan, from facts read in one round trip."""
    return list(_look(conn, host)[1].values())


def _look(conn, host: Host) -> tuple[dict, dict]:
    """({item NAME: its facts' values}, {item NAME: its plan}), the facts read in one round trip."""
    facts = [item.facts(host) for item in ITEMS]
    values = read(conn, *(f for group in facts for f in group), what="the server's state", timeout=180)
    values = values if isinstance(values, tuple) else (values,)
    by_item, plans, at = {}, {}, 0
    for item, group in zip(ITEMS, facts):
        by_item[item.NAME] = values[at:at + len(group)]
        plans[item.NAME] = item.plan(host, *by_item[item.NAME])
        at += len(group)
    return by_item, plans


def host_of(conn, env, keys: tuple) -> Host:
    found = read(conn, package_facts.packages(), what="the server's distribution")
    d = distros.distro(env.provision.distribution, found.os_release)
    pinned = env.ssh.known_hosts.read_text() if env.ssh.known_hosts.is_file() else ""
    host = Host(env.provision, env, d, found.in_container, (), keys, pinned)
    wanted = tuple(dict.fromkeys(p for item in ITEMS for p in item.packages(host)))
    return dataclasses.replace(host, packages=wanted)


def describe(plans) -> str:
    lines = []
    for p, item in zip(plans, ITEMS):
        if not p.changes:
            lines.append(f"  {item.NAME}: no change")
        else:
            lines.append(f"  {item.NAME}: {len(p.changes)} to change")
            lines += [f"    - {c}" for c in p.changes]
        lines += [f"    note: {n}" for n in p.notes]
    return "\n".join(lines)


def provision(env, dry_run: bool = False, out=None) -> Report:
    out = out or sys.stderr
    started = time.monotonic()
    keys = read_keys(env.provision)
    conn, login = connect(env)
    try:
        host = host_of(conn, env, keys)
        plans = plan_all(conn, host)
        runner = Runner(conn, dry_run=dry_run, out=out)
        runner.say(f"provision {env.name} ({env.ssh.host}, {host.distro.key}, logged in as {login}):\n"
                   + describe(plans))
        if dry_run:
            for p in plans:
                if p.steps:
                    runner.say(Plan(f"provision.{p.item}", list(p.steps)).render())
            report = Report(login, tuple(plans), time.monotonic() - started, True)
            runner.say(f"{report}\n(dry run: nothing was changed)")
            return report
        changed = [p for p in plans if p.steps]
        for p in changed:
            _run_item(runner, p)
        if changed:  # check, apply, check: the server must now be as every item wants it
            left = [c for p in plan_all(conn, host) for c in p.changes]
            if left:
                raise NotConverged("provisioning ran but the server still differs (something on it undoes a "
                                   "change, or an item is wrong):\n" + "\n".join(f"  - {c}" for c in left))
        if changed or conn.run(["test", "-f", PROVISIONED]).returncode != 0:
            marker = Wanted(PROVISIONED, b"provisioned by opskit\n")
            runner.run(Plan("provision.done", [put("mark the host provisioned", marker)]))
    finally:
        conn.close()
    report = Report(login, tuple(plans), time.monotonic() - started, False)
    Runner(out=out).say(str(report))
    return report


def _run_item(runner: Runner, p: ItemPlan) -> None:
    """Run one item's steps; a guarded item that fails after arming its revert is reverted now
    (and, if the link is gone, by the armed timer within guard.REVERT_AFTER_S seconds)."""
    try:
        runner.run(Plan(f"provision.{p.item}", list(p.steps)))
    except OpskitError as exc:
        if not p.guarded or not _armed(runner, p):
            raise
        try:
            runner.run(Plan(f"provision.{p.item}.revert", [guard.revert_now(p.item)]))
            runner.say(f"{p.item}: reverted to its previous state")
        except OpskitError:
            runner.say(f"could not revert {p.item} over this link: the server does so by itself within "
                       f"{guard.REVERT_AFTER_S}s of arming")
        raise exc


def _armed(runner: Runner, p: ItemPlan) -> bool:
    """Whether this run got as far as arming the item's revert."""
    ran = {id(r.step) for r in runner.results}
    return any(guard.is_arm(s) and id(s) in ran for s in p.steps)


@dataclass(frozen=True)
class Inspection:
    """What a read-only look at a server finds, item by item: the smoke suite's view."""

    host: Host
    values: dict  # item NAME -> its facts' values, in order
    plans: dict  # item NAME -> ItemPlan (what a provisioning run would change)


def inspect(conn, env) -> Inspection:
    """Every item's facts and plan, read-only (`conn` runs commands as root: sudo, or root itself)."""
    host = host_of(conn, env, read_keys(env.provision))
    return Inspection(host, *_look(conn, host))
