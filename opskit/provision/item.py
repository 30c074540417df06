"""What every provisioning item is made of, and the steps they share.

An item is a module with `NAME`, `TITLE`, `facts(host) -> tuple[Fact, ...]` and
`plan(host, *values) -> ItemPlan` (values: its facts, parsed, in order). `plan` is pure: it
compares what the facts say with what `host.settings` wants and returns the differences, one
line each, and the steps that remove them; no difference, no step. The runner (`provision.run`)
reads every item's facts in one round trip, prints the differences and runs the steps.

Items that could cut the SSH link (sshd, the firewall) return `guarded=True` and build their
steps with `guard.*`: the old state is kept and a revert is armed on the server before the
change, a NEW login as the deploy user proves the change, and only then is the revert disarmed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..facts.files import FileState
from ..steps import SERVER, Run

#: where provisioning keeps what it needs between steps (backups for a revert, markers)
STATE_DIR = "/var/lib/opskit"
PROVISIONED = f"{STATE_DIR}/provisioned"  # written when a run has converged every item


@dataclass(frozen=True)
class Host:
    """What every item plans from besides its own facts."""

    settings: object  # inventory.provisioning.Provision
    env: object  # the inventory Environment (ssh.user, ssh.port, remote_dir, logging, postgres)
    distro: object  # distros.Distro
    in_container: bool = False  # the kernel is shared (the simulated VPS): kernel-wide settings are
    #                             written to their files but not applied to this machine's kernel
    packages: tuple = ()  # every item's packages, in item order (the packages item installs them)
    deploy_keys: tuple = ()  # the public keys (one line each) the deploy user logs in with
    known_hosts: str = ""  # this machine's known_hosts text: what the operator pinned for the server

    @property
    def user(self) -> str:
        return self.env.ssh.user


@dataclass(frozen=True)
class ItemPlan:
    item: str  # the item's NAME
    changes: tuple = ()  # what differs, one line each ("X11Forwarding yes, wanted no")
    steps: tuple = ()
    guarded: bool = False
    notes: tuple = ()  # what the item cannot do here, said every run (e.g. swap in a container)

    def __post_init__(self):
        object.__setattr__(self, "changes", tuple(self.changes))
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "notes", tuple(self.notes))
        if bool(self.changes) != bool(self.steps):
            raise ValueError(f"{self.item}: changes and steps go together ({len(self.changes)} changes, "
                             f"{len(self.steps)} steps)")


@dataclass(frozen=True)
class Wanted:
    """A file as provisioning wants it."""

    path: str
    content: bytes
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    validate: tuple = field(default=())  # argv run on the new file before it replaces the old; %s is its path

    def differences(self, state: FileState | None) -> list[str]:
        """What differs between the file on the server and this one ([] when they match)."""
        if state is None or not state.exists:
            return [f"{self.path}: missing"]
        out = []
        if state.content != self.content:
            out.append(f"{self.path}: content differs")
        if state.mode != self.mode:
            out.append(f"{self.path}: mode {state.mode:04o}, wanted {self.mode:04o}")
        if (state.owner, state.group) != (self.owner, self.group):
            out.append(f"{self.path}: owner {state.owner}:{state.group}, wanted {self.owner}:{self.group}")
        return out


# The install script: the new content arrives on stdin, lands in a temp file beside the target
# with its mode and owner set before any byte is written, is validated there (when asked), and
# replaces the target by rename; nothing is half-written, a refused file leaves the old one.
_INSTALL = r"""
set -eu
path=$1 mode=$2 owner=$3 group=$4; shift 4
dir=$(dirname "$path")
mkdir -p "$dir"
tmp=$(mktemp "$dir/.opskit.XXXXXX")
trap 'rm -f "$tmp"' EXIT
chmod "$mode" "$tmp"
chown "$owner:$group" "$tmp"
cat > "$tmp"
if [ "$#" -gt 0 ]; then
    cmd=$(printf '%s\n' "$*" | sed "s|%s|$tmp|g")
    if ! out=$(sh -c "$cmd" 2>&1); then
        echo "refused: $path was not changed, because \`$*\` failed on the new file:" >&2
        echo "$out" >&2
        exit 1
    fi
fi
mv -f "$tmp" "$path"
trap - EXIT
"""


def put(title: str, wanted: Wanted) -> Run:
    """The step that writes `wanted` on the server (as root), validated first when it says how."""
    validate = (shlex.join(wanted.validate),) if wanted.validate else ()
    return Run(title, ["sh", "-c", _INSTALL, "install", wanted.path, f"{wanted.mode:04o}", wanted.owner, wanted.group,
                       *validate], on=SERVER, stdin=wanted.content)


def converge_files(wanted: list[Wanted], found: dict) -> tuple[list[str], list[Run]]:
    """(changes, steps) that make each wanted file so: only the ones that differ are written."""
    changes, steps = [], []
    for w in wanted:
        diff = w.differences(found.get(w.path))
        if diff:
            changes += diff
            steps.append(put(f"write {w.path}", w))
    return changes, steps


def shell(title: str, script: str, *args: str) -> Run:
    """A server step that is a short shell script (args as $1...)."""
    return Run(title, ["sh", "-c", script, title.split()[0], *args], on=SERVER)
