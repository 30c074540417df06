"""Memory and logs: a swap file sized from the inventory, vm.swappiness, and a cap on journald's
disk use (a small VPS has no swap and a journal that may grow to 4 GB).

The swap file is /swapfile with a marked /etc/fstab line, so opskit knows which swap is its own.
`provision.swap: 0` means no swap file of opskit's: one that an earlier run made is switched off
and removed with its fstab line (the inventory stays the whole truth, and the disk comes back); a
/swapfile that has no mark is someone else's and is left alone.

On a host whose kernel is shared (`host.in_container`, the simulated VPS: the kernel is this
machine's) nothing is applied to the kernel: no swapon/swapoff, no `sysctl`. The files are written
all the same, and the plan's notes say so (systemd itself ignores fstab swap in a container).

Will not: change the kernel's other settings, resize swap partitions, or touch journald.conf itself.
"""

from __future__ import annotations

from ..facts import system
from ..facts.files import files
from ..steps import SERVER, Check, Run
from .item import ItemPlan, Wanted, converge_files, put, shell

NAME = "memory"
TITLE = "swap, swappiness and the journald cap"

SWAP_FILE = "/swapfile"
FSTAB = "/etc/fstab"
SYSCTL = "/etc/sysctl.d/60-opskit.conf"
JOURNALD = "/etc/systemd/journald.conf.d/60-opskit.conf"
#: the line before ours in /etc/fstab: what makes a /swapfile opskit's
FSTAB_MARK = "# opskit: the swap file of `invoke provision` (inventory: provision.swap)"
FSTAB_LINE = f"{SWAP_FILE} none swap sw 0 0"
MIB = 1024 * 1024
HEADER = "# Written by `invoke provision` from the inventory ({key}): change it there.\n"
SHARED_KERNEL = "the kernel is shared (the host is a container)"


def packages(host) -> tuple:
    return ()


def facts(host) -> tuple:
    return (files(FSTAB, SYSCTL, JOURNALD, name="memory_files"), system.memory(SWAP_FILE))


# -- the files ----------------------------------------------------------------------------------------


def sysctl_text(host) -> str:
    return HEADER.format(key="provision.swappiness") + f"vm.swappiness = {host.settings.swappiness}\n"


def journald_text(host) -> str:
    return (HEADER.format(key="provision.journal_max_use")
            + f"[Journal]\nStorage=persistent\nSystemMaxUse={host.settings.journal_max_use}\n")


def _is_swap_file_entry(line: str) -> bool:
    fields = line.split()
    return len(fields) >= 3 and fields[0] == SWAP_FILE and fields[2] == "swap"


def has_mark(fstab: str | None) -> bool:
    return any(line.strip() == FSTAB_MARK for line in (fstab or "").splitlines())


def fstab_with(fstab: str | None, swap: bool) -> str:
    """/etc/fstab with opskit's swap entry (`swap`) or without it, every other line as it was.
    With `swap`, an unmarked /swapfile entry is replaced by ours (the file is ours to size now)."""
    lines = (fstab or "").splitlines()
    out, after_mark = [], False
    for line in lines:
        if line.strip() == FSTAB_MARK:
            after_mark = True
            continue
        if _is_swap_file_entry(line) and (after_mark or swap):
            after_mark = False
            continue
        after_mark = False
        out.append(line)
    if swap:
        out += [FSTAB_MARK, FSTAB_LINE]
    if out == lines:
        return fstab or ""
    return "\n".join(out) + "\n" if out else ""


# -- the steps ----------------------------------------------------------------------------------------

# umask first: the file is never readable by others, not even while it is made. fallocate is
# instant on ext4 and xfs; where it fails, zeros are written.
_MAKE_SWAP = r"""
set -eu
f=$1 mb=$2
umask 077
rm -f "$f"
if ! fallocate -l "${mb}M" "$f" 2>/dev/null; then
    rm -f "$f"
    dd if=/dev/zero of="$f" bs=1M count="$mb" status=none
fi
chown root:root "$f"
chmod 0600 "$f"
mkswap "$f"
"""

_VERIFY_JOURNALD = r"""
systemd-analyze cat-config systemd/journald.conf | awk -v max="$1" -v storage="$2" '
/^# \// { file = substr($0, 3); next }
/^[[:space:]]*([#;]|$)/ { next }
/^[[:space:]]*\[/ { section = $0; gsub(/[[:space:]]/, "", section); next }
section == "[Journal]" && index($0, "=") {
    key = substr($0, 1, index($0, "=") - 1); value = substr($0, index($0, "=") + 1)
    gsub(/^[[:space:]]+|[[:space:]]+$/, "", key); gsub(/^[[:space:]]+|[[:space:]]+$/, "", value)
    if (key == "SystemMaxUse") { m = value; mf = file }
    if (key == "Storage") { s = value; sf = file }
}
END {
    if (m != max) { print "SystemMaxUse is " (m == "" ? "unset" : m " (" mf ")") ", wanted " max; bad = 1 }
    if (s != storage) { print "Storage is " (s == "" ? "unset" : s " (" sf ")") ", wanted " storage; bad = 1 }
    exit bad
}'
"""


def make_swap(mb: int) -> Run:
    return shell(f"make {SWAP_FILE} ({mb} MB of swap, mode 0600)", _MAKE_SWAP, SWAP_FILE, str(mb))


def swapon() -> Run:
    return Run(f"switch on the swap in {SWAP_FILE}", ("swapon", SWAP_FILE), on=SERVER)


def swapoff() -> Run:
    return Run(f"switch off the swap in {SWAP_FILE}", ("swapoff", SWAP_FILE), on=SERVER, timeout=600)


def apply_sysctl() -> Run:
    return Run("apply vm.swappiness to the kernel", ("sysctl", "-p", SYSCTL), on=SERVER)


def restart_journald() -> Run:
    return Run("restart systemd-journald (it reads its settings only when it starts)",
               ("systemctl", "restart", "systemd-journald"), on=SERVER)


def verify_journald(host) -> Check:
    return Check("memory: prove journald's merged settings are the wanted ones (systemd-analyze cat-config)",
                 ("sh", "-c", _VERIFY_JOURNALD, "verify", host.settings.journal_max_use, "persistent"), on=SERVER,
                 hint=f"a journald.conf drop-in read after {JOURNALD} overrides it: remove those keys there, "
                      "then run `invoke provision` again")


# -- the plan -----------------------------------------------------------------------------------------


def plan(host, found: dict, mem: system.Memory) -> ItemPlan:
    changes, steps, notes = [], [], []
    for part in (_swap, _swappiness, _journald):
        c, s, n = part(host, found, mem)
        changes += c
        steps += s
        notes += n
    return ItemPlan(NAME, changes, steps, notes=notes)


def _fstab_step(found: dict, swap: bool) -> tuple[list, list]:
    state = found.get(FSTAB)
    now = state.content.decode() if state is not None and state.exists else None
    text = fstab_with(now, swap)
    if now is not None and text == now:
        return [], []
    # fstab is everyone's: its mode and owner stay as they are
    wanted = Wanted(FSTAB, text.encode(), state.mode if now is not None else 0o644,
                    state.owner if now is not None else "root", state.group if now is not None else "root")
    what = f"{FSTAB}: add the entry of {SWAP_FILE}" if swap else f"{FSTAB}: drop the entry of {SWAP_FILE}"
    return [what], [put(f"write {FSTAB}", wanted)]


def _swap(host, found: dict, mem: system.Memory):
    changes, steps, notes = [], [], []
    mb = host.settings.swap_mb
    sf = mem.swap_file
    kernel = not host.in_container
    # in a container /proc/swaps is the shared kernel's: its /swapfile is not the box's
    active = kernel and SWAP_FILE in mem.active_swaps
    state = found.get(FSTAB)
    ours = has_mark(state.content.decode() if state is not None and state.exists else None)
    if mb:
        if not sf.exists:
            changes.append(f"{SWAP_FILE}: missing, wanted {mb} MB of swap")
        elif sf.size != mb * MIB:
            changes.append(f"{SWAP_FILE}: {sf.size / MIB:g} MB, wanted {mb} MB")
        elif not sf.is_swap:
            changes.append(f"{SWAP_FILE}: not a swap area, wanted {mb} MB of swap")
        if changes:
            if active:
                steps.append(swapoff())
                active = False
            steps.append(make_swap(mb))
        elif (sf.mode, sf.owner, sf.group) != (0o600, "root", "root"):
            changes.append(f"{SWAP_FILE}: mode {sf.mode:04o} {sf.owner}:{sf.group}, wanted 0600 root:root")
            steps.append(shell(f"protect {SWAP_FILE} (mode 0600, root's)",
                               'chown root:root "$1" && chmod 0600 "$1"', SWAP_FILE))
        c, s = _fstab_step(found, swap=True)
        changes += c
        steps += s
        if kernel and not active:
            if not changes:
                changes.append(f"swap: {SWAP_FILE} is not switched on")
            steps.append(swapon())
        if not kernel:
            notes.append(f"swap: {SWAP_FILE} and its fstab entry are written but not switched on: {SHARED_KERNEL}")
        return changes, steps, notes
    if ours:
        if active:
            changes.append(f"swap: {SWAP_FILE} is on, wanted no swap file (provision.swap is 0)")
            steps.append(swapoff())
        if sf.exists:
            changes.append(f"{SWAP_FILE}: opskit's swap file, wanted none (provision.swap is 0)")
            steps.append(shell(f"remove {SWAP_FILE}", 'rm -f "$1"', SWAP_FILE))
        c, s = _fstab_step(found, swap=False)
        changes += c
        steps += s
    elif sf.exists:
        notes.append(f"swap: {SWAP_FILE} is not opskit's (no mark in {FSTAB}): left as it is")
    return changes, steps, notes


def _swappiness(host, found: dict, mem: system.Memory):
    want = host.settings.swappiness
    changes, steps = converge_files([Wanted(SYSCTL, sysctl_text(host).encode())], found)
    if host.in_container:
        return changes, steps, [f"vm.swappiness: written to {SYSCTL} but not applied: {SHARED_KERNEL}"]
    if steps:
        steps.append(apply_sysctl())
    elif mem.swappiness != want:
        changes.append(f"vm.swappiness is {mem.swappiness} in the kernel, wanted {want}")
        steps.append(apply_sysctl())
    return changes, steps, []


def _journald(host, found: dict, mem: system.Memory):
    want = host.settings.journal_max_use
    changes, steps = converge_files([Wanted(JOURNALD, journald_text(host).encode())], found)
    if steps:
        return changes, steps + [restart_journald(), verify_journald(host)], []
    merged = {k: mem.journald_setting(k) for k in ("SystemMaxUse", "Storage")}
    if merged != {"SystemMaxUse": want, "Storage": "persistent"}:
        for key, value in (("SystemMaxUse", want), ("Storage", "persistent")):
            if merged[key] != value:
                where = mem.journald.get(key, (None, ""))[1]
                changes.append(f"journald {key} is {merged[key] or 'unset'}"
                               f"{f' (set in {where})' if where else ''}, wanted {value}")
        return changes, [verify_journald(host)], []
    wanted_bytes = system.size_bytes(want)
    # journald prints its cap with one decimal (500.0M, 1.4G): 5% covers that rounding
    if mem.journald_max_use is not None and wanted_bytes and mem.journald_max_use > wanted_bytes * 1.05:
        changes.append(f"journald runs with a cap of {mem.journald_max_use / MIB:.0f} MB, wanted {want}: "
                       "it has not been restarted since its settings changed")
        steps.append(restart_journald())
    return changes, steps, []
