"""The memory item's plan (swap file, vm.swappiness, journald's cap) from parsed facts, on a VM and
in a container, whose kernel is shared and must not be touched; the swap-making step and the
fact's probe run here for real on a small file (no swapon)."""

from __future__ import annotations

import subprocess

import pytest

from opskit.facts import system
from opskit.facts.base import script_text
from opskit.facts.files import FileState
from opskit.provision import memory
from opskit.provision.item import Host

from .provision_host import make_host

MIB = memory.MIB
FSTAB0 = "# /etc/fstab: static file system information.\nUUID=abc / ext4 rw,discard,errors=remount-ro 0 1\n"



@pytest.fixture
def host(env):
    def make(in_container=False, **settings) -> Host:
        return make_host(env, in_container, **settings)
    return make


def state(path: str, text: str | None, mode=0o644) -> FileState:
    return FileState(path, None if text is None else text.encode(), mode, "root", "root")


def files(h: Host, fstab=None, sysctl=True, journald=True) -> dict:
    return {
        memory.FSTAB: state(memory.FSTAB, memory.fstab_with(FSTAB0, bool(h.settings.swap_mb)) if fstab is None
                            else fstab),
        memory.SYSCTL: state(memory.SYSCTL, memory.sysctl_text(h) if sysctl else None),
        memory.JOURNALD: state(memory.JOURNALD, memory.journald_text(h) if journald else None),
    }


def mem(h: Host | None = None, swap_mb=2048, active=True, swappiness=10, journald=None, max_use=500 * MIB,
        is_swap=True, mode=0o600) -> system.Memory:
    sf = system.SwapFile(memory.SWAP_FILE, swap_mb * MIB, mode, "root", "root", is_swap) if swap_mb \
        else system.SwapFile(memory.SWAP_FILE)
    if journald is None:
        journald = {"SystemMaxUse": ("500M", memory.JOURNALD), "Storage": ("persistent", memory.JOURNALD)}
    return system.Memory((memory.SWAP_FILE,) if active else (), sf, swappiness, journald, max_use)


def bare() -> system.Memory:
    return system.Memory((), system.SwapFile(memory.SWAP_FILE), 60, {}, 4096 * MIB)


def titles(p) -> list[str]:
    return [s.title for s in p.steps]


def argvs(p) -> list[tuple]:
    return [tuple(s.argv) for s in p.steps]


# -- a bare host ---------------------------------------------------------------------------------------


def test_a_bare_vm_gets_swap_on_swappiness_applied_and_journald_restarted(host):
    h = host()
    p = memory.plan(h, files(h, fstab=FSTAB0, sysctl=False, journald=False), bare())
    assert titles(p) == [
        "make /swapfile (2048 MB of swap, mode 0600)", "write /etc/fstab", "switch on the swap in /swapfile",
        f"write {memory.SYSCTL}", "apply vm.swappiness to the kernel", f"write {memory.JOURNALD}",
        "restart systemd-journald (it reads its settings only when it starts)",
        "memory: prove journald's merged settings are the wanted ones (systemd-analyze cat-config)"]
    assert ("sysctl", "-p", memory.SYSCTL) in argvs(p) and ("swapon", "/swapfile") in argvs(p)
    assert p.notes == ()


def test_in_a_container_the_files_are_written_and_the_kernel_is_left_alone(host):
    h = host(in_container=True)
    p = memory.plan(h, files(h, fstab=FSTAB0, sysctl=False, journald=False), bare())
    flat = " ".join(" ".join(a) for a in argvs(p))
    assert "swapon" not in flat and "swapoff" not in flat and "sysctl " not in flat.replace("sysctl.d", "")
    assert "make /swapfile (2048 MB of swap, mode 0600)" in titles(p) and "write /etc/fstab" in titles(p)
    assert f"write {memory.SYSCTL}" in titles(p)
    assert any("not switched on" in n and "shared" in n for n in p.notes)
    assert any(n.startswith("vm.swappiness: written") for n in p.notes)


def test_the_kernels_swap_is_not_the_boxs_in_a_container(host):
    # /proc/swaps in a container is the shared kernel's: a /swapfile listed there is not the box's
    h = host(in_container=True)
    p = memory.plan(h, files(h), mem(h, active=True, swap_mb=1024))
    assert "swapoff" not in " ".join(" ".join(a) for a in argvs(p))


# -- converged -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_container", [False, True])
def test_a_converged_host_plans_nothing(host, in_container):
    h = host(in_container=in_container)
    p = memory.plan(h, files(h), mem(h, active=not in_container, swappiness=10 if not in_container else 60))
    assert p.changes == () and p.steps == ()
    assert bool(p.notes) == in_container  # said every run where the kernel is shared


def test_a_kernel_with_another_swappiness_gets_the_file_applied(host):
    h = host()
    p = memory.plan(h, files(h), mem(h, swappiness=60))
    assert p.changes == ("vm.swappiness is 60 in the kernel, wanted 10",)
    assert argvs(p) == [("sysctl", "-p", memory.SYSCTL)]


def test_a_swap_file_that_is_off_is_switched_on(host):
    h = host()
    p = memory.plan(h, files(h), mem(h, active=False))
    assert p.changes == ("swap: /swapfile is not switched on",)
    assert argvs(p) == [("swapon", "/swapfile")]


def test_a_swap_file_of_another_size_is_switched_off_remade_and_on(host):
    h = host()
    p = memory.plan(h, files(h), mem(h, swap_mb=1024))
    assert p.changes == ("/swapfile: 1024 MB, wanted 2048 MB",)
    assert titles(p) == ["switch off the swap in /swapfile", "make /swapfile (2048 MB of swap, mode 0600)",
                         "switch on the swap in /swapfile"]


def test_a_file_that_is_no_swap_area_is_remade(host):
    h = host()
    p = memory.plan(h, files(h), mem(h, active=False, is_swap=False))
    assert p.changes == ("/swapfile: not a swap area, wanted 2048 MB of swap",)
    assert titles(p)[0].startswith("make /swapfile")


def test_a_readable_swap_file_is_protected(host):
    h = host()
    p = memory.plan(h, files(h), mem(h, mode=0o644))
    assert p.changes == ("/swapfile: mode 0644 root:root, wanted 0600 root:root",)
    assert "chmod 0600" in p.steps[0].argv[2]


# -- no swap -------------------------------------------------------------------------------------------


def test_swap_zero_removes_opskits_swap_file(host):
    h = host(swap_mb=0)
    ours = memory.fstab_with(FSTAB0, True)
    p = memory.plan(h, files(h, fstab=ours), mem(h, swap_mb=2048))
    assert titles(p) == ["switch off the swap in /swapfile", "remove /swapfile", "write /etc/fstab"]
    assert p.steps[2].stdin == FSTAB0.encode()


def test_swap_zero_in_a_container_removes_the_file_without_swapoff(host):
    h = host(in_container=True, swap_mb=0)
    p = memory.plan(h, files(h, fstab=memory.fstab_with(FSTAB0, True)), mem(h, swap_mb=2048, active=True))
    assert titles(p) == ["remove /swapfile", "write /etc/fstab"]


def test_swap_zero_leaves_a_swap_file_that_is_not_opskits(host):
    h = host(swap_mb=0)
    theirs = FSTAB0 + "/swapfile none swap sw 0 0\n"
    p = memory.plan(h, files(h, fstab=theirs), mem(h, swap_mb=1024))
    assert p.steps == ()
    assert p.notes == ("swap: /swapfile is not opskit's (no mark in /etc/fstab): left as it is",)


# -- /etc/fstab ----------------------------------------------------------------------------------------


def test_fstab_keeps_every_other_line_and_is_stable():
    once = memory.fstab_with(FSTAB0, True)
    assert once == FSTAB0 + memory.FSTAB_MARK + "\n" + memory.FSTAB_LINE + "\n"
    assert memory.fstab_with(once, True) == once
    assert memory.fstab_with(once, False) == FSTAB0


def test_fstab_without_a_final_newline_is_left_byte_for_byte_when_there_is_nothing_to_do():
    assert memory.fstab_with("UUID=abc / ext4 rw 0 1", False) == "UUID=abc / ext4 rw 0 1"


def test_without_swap_only_the_marked_entry_goes():
    theirs = FSTAB0 + "/swapfile none swap sw 0 0\n"
    assert memory.fstab_with(theirs, False) == theirs
    assert memory.fstab_with(memory.fstab_with(FSTAB0, True) + "/dev/vdb1 none swap sw 0 0\n", False) == \
        FSTAB0 + "/dev/vdb1 none swap sw 0 0\n"


def test_an_unmarked_swapfile_entry_gives_way_to_ours_when_swap_is_wanted():
    theirs = FSTAB0 + "/swapfile    none   swap   defaults   0 0\n"
    assert memory.fstab_with(theirs, True) == memory.fstab_with(FSTAB0, True)


# -- journald ------------------------------------------------------------------------------------------


def test_a_journald_that_runs_with_a_larger_cap_is_restarted(host):
    h = host()
    p = memory.plan(h, files(h), mem(h, max_use=4096 * MIB))
    assert p.changes == ("journald runs with a cap of 4096 MB, wanted 500M: it has not been restarted since its "
                         "settings changed",)
    assert argvs(p) == [("systemctl", "restart", "systemd-journald")]


def test_a_smaller_cap_in_force_is_fine_and_an_unknown_one_is_no_reason_to_restart(host):
    h = host()
    assert memory.plan(h, files(h), mem(h, max_use=int(496.5 * MIB))).steps == ()  # a small disk caps it lower
    assert memory.plan(h, files(h), mem(h, max_use=None)).steps == ()


def test_a_later_drop_in_that_overrides_ours_is_a_change_and_a_proof_that_will_fail(host):
    h = host()
    later = {"SystemMaxUse": ("2G", "/etc/systemd/journald.conf.d/90-cloud.conf"),
             "Storage": ("persistent", memory.JOURNALD)}
    p = memory.plan(h, files(h), mem(h, journald=later))
    assert p.changes == ("journald SystemMaxUse is 2G (set in /etc/systemd/journald.conf.d/90-cloud.conf), "
                         "wanted 500M",)
    assert titles(p) == ["memory: prove journald's merged settings are the wanted ones (systemd-analyze cat-config)"]


def test_the_journald_proof_reads_the_merged_config_as_journald_does(host, tmp_path):
    h = host()
    check = memory.verify_journald(h)

    def run(cat_config: str) -> subprocess.CompletedProcess:
        (tmp_path / "out").write_text(cat_config)
        (tmp_path / "systemd-analyze").write_text(f"#!/bin/sh\ncat {tmp_path / 'out'}\n")
        (tmp_path / "systemd-analyze").chmod(0o755)
        return subprocess.run(list(check.argv), capture_output=True, text=True, timeout=30,
                              env={"PATH": f"{tmp_path}:/usr/bin:/bin"})

    main = "# /etc/systemd/journald.conf\n[Journal]\n#Storage=auto\n#SystemMaxUse=\n\n"
    ours = f"# {memory.JOURNALD}\n" + memory.journald_text(h)
    assert run(main + ours).returncode == 0
    late = run(main + ours + "\n# /etc/systemd/journald.conf.d/90-x.conf\n[Journal]\nSystemMaxUse = 2G\n")
    assert late.returncode == 1
    assert late.stdout.strip() == "SystemMaxUse is 2G (/etc/systemd/journald.conf.d/90-x.conf), wanted 500M"
    assert run(main).returncode == 1


# -- the fact ------------------------------------------------------------------------------------------


def test_the_memory_fact_is_parsed():
    text = "\n".join([
        "=====opskit:swaps=====", "Filename\tType\tSize\tUsed\tPriority", "/swapfile  file  2097148  0  -2",
        "=====opskit:swapfile=====", "2147483648 600 root root", "SWAPSPACE2",
        "=====opskit:swappiness=====", "10",
        "=====opskit:journald_config=====", "# /etc/systemd/journald.conf", "[Journal]", "#SystemMaxUse=",
        f"# {memory.JOURNALD}", "[Journal]", "Storage=persistent", "SystemMaxUse=500M",
        "=====opskit:journald_running=====",
        "System Journal (/var/log/journal/2328) is 8.0M, max 500.0M, 492.0M free.",
    ])
    m = system.parse_memory(text, "/swapfile")
    assert m.active_swaps == ("/swapfile",)
    assert m.swap_file == system.SwapFile("/swapfile", 2 * 1024 ** 3, 0o600, "root", "root", True)
    assert m.swappiness == 10 and m.journald_max_use == 500 * MIB
    assert m.journald == {"Storage": ("persistent", memory.JOURNALD), "SystemMaxUse": ("500M", memory.JOURNALD)}
    empty = system.parse_memory("=====opskit:swapfile=====\nmissing\n", "/swapfile")
    assert not empty.swap_file.exists and empty.journald_max_use is None and empty.swappiness is None


def test_sizes_are_read_as_journald_counts_them():
    assert system.size_bytes("500M") == 500 * MIB
    assert system.size_bytes("1.1G") == int(1.1 * 1024 ** 3)
    assert system.size_bytes("4096") == 4096
    assert system.size_bytes("lots") is None


def test_the_swap_step_makes_a_swap_area_that_the_probe_recognizes(tmp_path):
    # the real step and the real probe, on a small file here (mkswap writes a header; nothing is switched on)
    path = str(tmp_path / "swapfile")
    step = memory.make_swap(1)
    argv = list(step.argv[:3]) + ["make", path, "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    probe = subprocess.run(["sh", "-c", script_text("system_memory.sh"), "system_memory", path],
                           capture_output=True, text=True, timeout=60)
    m = system.parse_memory(probe.stdout, path)
    assert m.swap_file.size == MIB and m.swap_file.mode == 0o600 and m.swap_file.is_swap
    (tmp_path / "plain").write_bytes(b"\0" * MIB)
    probe = subprocess.run(["sh", "-c", script_text("system_memory.sh"), "system_memory", str(tmp_path / "plain")],
                           capture_output=True, text=True, timeout=60)
    assert system.parse_memory(probe.stdout, str(tmp_path / "plain")).swap_file.is_swap is False
