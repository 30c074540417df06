"""Item: the deploy user. It logs in with exactly the inventory's keys (`provision.authorized_keys`),
is in the `docker` group (Docker's socket is root-equivalent, so its `sudo` adds no power, only an
audit trail: the smoke suite and later provisioning runs read root-only state through it), and
owns the release folder."""

from __future__ import annotations

import posixpath

from ..facts import accounts as account_facts
from ..facts import files as file_facts
from ..steps import SERVER, Run
from .item import Host, ItemPlan, Wanted, converge_files

NAME = "accounts"
TITLE = "the deploy user, its keys, sudo and the release folder"
SUDOERS = "/etc/sudoers.d/opskit-deploy"


def packages(host: Host) -> tuple:
    return ("sudo",)


def home(host: Host, account=None) -> str:
    return (account.home if account is not None and account.home else None) or f"/home/{host.user}"


def _wanted(host: Host, account=None) -> list[Wanted]:
    keys = "".join(f"{k.strip()}\n" for k in host.deploy_keys).encode()
    return [Wanted(posixpath.join(home(host, account), ".ssh", "authorized_keys"), keys, 0o600, host.user, host.user),
            Wanted(SUDOERS, f"{host.user} ALL=(ALL:ALL) NOPASSWD: ALL\n".encode(), 0o440,
                   validate=("visudo", "-cf", "%s"))]


def facts(host: Host) -> tuple:
    return (account_facts.account(host.user, host.env.remote_dir),
            file_facts.files(*(w.path for w in _wanted(host)), name="account_files"))


def plan(host: Host, account, found) -> ItemPlan:
    user, changes, steps = host.user, [], []
    if not account.exists:
        changes.append(f"no user {user}")
        steps.append(Run(f"create the user {user}", ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash",
                                                     user], on=SERVER))
    if "docker" not in account.groups:
        changes.append(f"{user} is not in the docker group")
        steps.append(Run(f"add {user} to the docker group", ["usermod", "--append", "--groups", "docker", user],
                         on=SERVER))
    keys, sudo = _wanted(host, account)
    file_changes, file_steps = converge_files([keys], found)
    if file_steps:
        ssh_dir = posixpath.dirname(keys.path)
        steps.append(Run(f"make {ssh_dir}", ["install", "-d", "-m", "0700", "-o", user, "-g", user, ssh_dir], on=SERVER))
    changes += file_changes
    steps += file_steps
    sudo_changes, sudo_steps = converge_files([sudo], found)
    changes += sudo_changes
    steps += sudo_steps
    if account.remote_dir != (user, user, 0o750):
        now = "missing" if account.remote_dir is None else "{} {}:{} {:04o}".format(
            "owned by", *account.remote_dir)
        changes.append(f"{host.env.remote_dir}: {now}, wanted owned by {user}:{user} 0750")
        steps.append(Run(f"give {user} {host.env.remote_dir}", ["install", "-d", "-m", "0750", "-o", user, "-g", user,
                                                                host.env.remote_dir], on=SERVER))
    return ItemPlan(NAME, changes, steps)
