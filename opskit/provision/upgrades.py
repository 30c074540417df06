"""Unattended security upgrades: APT's daily job installs security updates on its own, never the
Docker and containerd packages (an unattended containerd upgrade that leaves dockerd stopped is a
known outage), and reboots in the inventory's window when an upgrade needs it and the inventory
allows it.

Everything is in one file of ours, read after Debian's 20auto-upgrades and 50unattended-upgrades
(APT reads /etc/apt/apt.conf.d in name order, a later scalar wins, `#clear` empties a list), so
the policy does not depend on what those say or on a package upgrade rewriting them. The plan
compares the policy APT really uses (`apt-config dump`, every file merged) with the wanted one,
and proves it again after writing: a later file of someone else's that overrides ours fails that
check, by name, rather than passing silently.

Will not: run `apt-get update` or any upgrade, change dpkg holds (`apt-mark hold` would also stop
the upgrades made on purpose), or touch Debian's own files.
"""

from __future__ import annotations

from ..facts import system
from ..facts.files import files
from ..steps import SERVER, Check, Run
from .item import ItemPlan, Wanted, converge_files, shell

NAME = "upgrades"
TITLE = "unattended security upgrades"

CONF = "/etc/apt/apt.conf.d/60opskit-upgrades"
TIMERS = ("apt-daily.timer", "apt-daily-upgrade.timer")  # they run `apt-get update` and unattended-upgrade

#: the origins of security updates only, as unattended-upgrades matches them
#: (`${distro_codename}` is expanded by unattended-upgrades itself)
SECURITY_ORIGINS = {
    "debian-12": ("origin=Debian,codename=${distro_codename}-security,label=Debian-Security",
                  "origin=Debian,codename=${distro_codename},label=Debian-Security"),
    # as Ubuntu's own 50unattended-upgrades names them (not tested here: no Ubuntu mirror)
    "ubuntu-24.04": ("origin=Ubuntu,archive=${distro_codename}-security",
                     "origin=UbuntuESMApps,archive=${distro_codename}-apps-security",
                     "origin=UbuntuESM,archive=${distro_codename}-infra-security"),
}

_PERIODIC = "APT::Periodic::"
_UU = "Unattended-Upgrade::"


def packages(host) -> tuple:
    return ("unattended-upgrades",) if host.settings.upgrades else ()


def facts(host) -> tuple:
    return (files(CONF, name="upgrades_files"), system.upgrades(), system.pending_upgrades())


def blacklist_pattern(package: str) -> str:
    """The blacklist item that holds exactly `package`: unattended-upgrade matches items as Python
    regexes from the start of the name (re.match), so `docker.io` alone would also hold
    `docker.io-foo` and `dockerXio`. Package names hold only [a-z0-9+.-]: `.` and `+` are escaped.

    The parentheses are for speed: an item that reads as a POSIX regex too (`^docker-cli$`) is
    handed to apt as a regex pin, which apt tries on every package at every lookup; any other
    item is matched once and pinned by exact name (unattended-upgrade 2.9,
    `pinning_from_regex_list`). Measured on a bookworm box with 12 Docker packages held:
    `unattended-upgrade --dry-run` took 93 s with `^name$` items, 42 s with `^(name)$`."""
    return "^(" + package.replace(".", r"\.").replace("+", r"\+") + ")$"


def wanted_scalars(host) -> dict:
    s = host.settings
    return {
        _PERIODIC + "Enable": "1",
        _PERIODIC + "Update-Package-Lists": "1",
        _PERIODIC + "Unattended-Upgrade": "1" if s.upgrades else "0",
        _UU + "Automatic-Reboot": "true" if s.reboot else "false",
        _UU + "Automatic-Reboot-Time": s.reboot_time,
    }


def wanted_lists(host) -> dict:
    return {
        _UU + "Allowed-Origins": (),
        _UU + "Origins-Pattern": SECURITY_ORIGINS[host.settings.distribution],
        _UU + "Package-Blacklist": tuple(blacklist_pattern(p) for p in host.settings.hold),
    }


def render(host) -> str:
    scalars, lists = wanted_scalars(host), wanted_lists(host)

    def scalar(key):
        return f'{key} "{scalars[key]}";'

    def block(key):
        return [f"#clear {key};", f"{key} {{", *(f'\t"{item}";' for item in lists[key]), "};"]

    return "\n".join([
        "// Written by `invoke provision` from the inventory (provision.upgrades): change it there.",
        "// Read after 20auto-upgrades and 50unattended-upgrades: what is set here is what APT uses.",
        scalar(_PERIODIC + "Enable"),
        scalar(_PERIODIC + "Update-Package-Lists"),
        scalar(_PERIODIC + "Unattended-Upgrade"),
        "",
        "// security updates only, whatever other files allow",
        f"#clear {_UU}Allowed-Origins;",
        *block(_UU + "Origins-Pattern"),
        "",
        "// never upgraded unattended (exact names): Docker and containerd are upgraded on purpose",
        *block(_UU + "Package-Blacklist"),
        "",
        scalar(_UU + "Automatic-Reboot"),
        scalar(_UU + "Automatic-Reboot-Time"),
        "",
    ])


def policy_differences(host, policy: system.UpgradePolicy) -> list[str]:
    """How the policy APT uses differs from the wanted one, one line per key ([] when it matches)."""
    out = []
    for key, want in wanted_scalars(host).items():
        have = policy.value(key)
        if have != want:
            out.append(f"{key} is {'unset' if have is None else repr(have)}, wanted {want!r}")
    for key, want in wanted_lists(host).items():
        have = policy.items(key)
        extra = [i for i in have if i not in want]
        lacking = [i for i in want if i not in have]
        if extra:
            out.append(f"{key} also has {', '.join(extra)}")
        if lacking:
            out.append(f"{key} lacks {', '.join(lacking)}")
    return out


# Exits non-zero, saying what differs and which files set these keys, unless `apt-config dump`
# shows exactly the wanted values for the managed keys (args: KEY... -- KEY=VALUE|KEY::=ITEM...).
# awk reads them from the environment: `awk -v` would eat the backslashes of `^docker\.io$`.
_VERIFY = r"""
keys=''
while [ "$#" -gt 0 ] && [ "$1" != -- ]; do keys="$keys$1
"; shift; done
shift
want=$(printf '%s\n' "$@")
if KEYS=$keys WANT=$want apt-config dump --format '%f=%v%n' | KEYS=$keys WANT=$want awk '
BEGIN { n = split(ENVIRON["KEYS"], k, "\n"); for (i = 1; i <= n; i++) if (k[i] != "") managed[k[i]] = 1
        n = split(ENVIRON["WANT"], w, "\n"); for (i = 1; i <= n; i++) if (w[i] != "") wanted[w[i]] = 1 }
{ i = index($0, "="); key = substr($0, 1, i - 1); value = substr($0, i + 1); sub(/::$/, "", key)
  if (!(key in managed) || value == "") next
  seen[$0] = 1
  if (!($0 in wanted)) { print "in force but not wanted: " $0; bad = 1 } }
END { for (x in wanted) if (!(x in seen)) { print "wanted but not in force: " x; bad = 1 }
      exit bad }'; then
    exit 0
fi
echo "files that set these keys (read in name order, the last one wins):"
grep -rlE 'APT::Periodic|Unattended-Upgrade' /etc/apt/apt.conf /etc/apt/apt.conf.d 2>/dev/null | sort
exit 1
"""


def verify(host) -> Check:
    """The step that proves APT uses the wanted policy (all its files merged)."""
    scalars, lists = wanted_scalars(host), wanted_lists(host)
    lines = [f"{k}={v}" for k, v in scalars.items()] + [f"{k}::={i}" for k, items in lists.items() for i in items]
    return Check("upgrades: prove APT uses the wanted unattended-upgrades policy (apt-config dump)",
                 ("sh", "-c", _VERIFY, "verify", *scalars, *lists, "--", *lines), on=SERVER,
                 hint=f"a file under /etc/apt/apt.conf.d read after {CONF.rsplit('/', 1)[-1]} overrides it: "
                      "remove those keys there, then run `invoke provision` again")


def plan(host, found: dict, policy: system.UpgradePolicy, pending: tuple = ()) -> ItemPlan:
    file_changes, steps = converge_files([Wanted(CONF, render(host).encode())], found)
    changes = policy_differences(host, policy) + file_changes
    if not policy.has_apt:
        changes.append("apt-config is not on the server: this item is for Debian and Ubuntu")
    if host.settings.upgrades:
        off = [t for t in TIMERS if policy.timers.get(t, "") not in ("enabled", "enabled-runtime", "static", "")]
        if off:
            changes += [f"{t} is {policy.timers[t]}, wanted enabled" for t in off]
            steps.append(shell(f"enable {' '.join(off)}", 'systemctl unmask "$@" && systemctl enable --now "$@"',
                               *off))
    if changes:
        steps.append(verify(host))
        if host.settings.upgrades:
            # a host that gets (or gets back) its upgrade policy is brought up to date with it now,
            # not at the next daily run: unattended-upgrade itself, with the policy just written
            steps.append(Run("install the security updates pending now (unattended-upgrade, with that policy)",
                             ("unattended-upgrade",), on=SERVER, timeout=1800, stream=True))
    waiting = system.security_pending(pending, policy)
    notes = [f"{len(waiting)} security update(s) pending ({', '.join(p.name for p in waiting[:8])}"
             f"{', ...' if len(waiting) > 8 else ''}): unattended-upgrades installs them on its next daily run, "
             "or now: sudo unattended-upgrade"] if waiting and host.settings.upgrades else []
    return ItemPlan(NAME, changes, steps, notes=notes)
