"""The packages item: which sources and packages a host gets, from what it has (no server)."""

from __future__ import annotations

import pytest

from opskit.facts.files import FileState
from opskit.facts.packages import Packages, parse_packages
from opskit.provision import packages
from opskit.provision.item import put

from .provision_host import make_host

MIRROR = "http://mirror.example/debian"


def found(installed=(), mirror=MIRROR):
    return Packages({name: "1.0" for name in installed}, mirror, {"ID": "debian", "VERSION_ID": "12"}, "docker")


def sources_as_written(host):
    """The apt source files exactly as the item writes them."""
    plan = packages.plan(host, found(), {})
    return {s.argv[4]: FileState(s.argv[4], s.stdin, 0o644, "root", "root") for s in plan.steps
            if s.argv[:3] == put("x", packages._source_files(host, MIRROR)[0]).argv[:3]}


@pytest.fixture
def host(env):
    return make_host(env)


def test_a_bare_debian_12_gets_trixie_docker_by_name_and_bookworm_for_the_rest(host):
    plan = packages.plan(host, found(), {})
    install = plan.steps[-1].argv
    assert install[install.index("install"):install.index("--no-install-recommends")] == ("install", "-y", "-q")
    named = install[install.index("--no-install-recommends") + 1:]
    for name in ("docker.io", "docker-cli", "docker-compose", "docker-buildx", "containerd"):
        assert f"{name}/trixie" in named
    # trixie's runc and iptables need libc6 2.38: taking them would make the host Debian 13
    for name in ("runc", "iptables", "sudo", "systemd-timesyncd"):
        assert name in named
    assert "-t" not in install and not any(a.startswith("--target-release") for a in install)


def test_the_trixie_source_uses_the_hosts_own_mirror_and_is_pinned_below_bookworm(host):
    written = sources_as_written(host)
    source = written["/etc/apt/sources.list.d/opskit-trixie.sources"].content.decode()
    assert f"URIs: {MIRROR}\n" in source and "Suites: trixie\n" in source
    pin = written["/etc/apt/preferences.d/opskit-trixie"].content.decode()
    assert "Pin: release n=trixie\nPin-Priority: 100\n" in pin


def test_update_comes_before_install_and_nothing_is_upgraded(host):
    titles = [s.title for s in packages.plan(host, found(), {}).steps]
    assert titles.index("apt-get update") < len(titles) - 1
    assert not any("upgrade" in " ".join(s.argv) for s in packages.plan(host, found(), {}).steps)


def test_a_host_that_has_everything_plans_nothing(host):
    everything = found(installed=packages.packages(host))
    plan = packages.plan(host, everything, sources_as_written(host))
    assert plan.changes == () and plan.steps == ()


def test_only_the_missing_packages_are_named(host):
    have = [p for p in packages.packages(host) if p != "sudo"]
    plan = packages.plan(host, found(installed=have), sources_as_written(host))
    assert plan.changes == ("not installed: sudo",)
    assert plan.steps[-1].argv[-1] == "sudo"


def test_every_items_packages_are_installed_when_the_host_lists_them(host):
    import dataclasses
    wide = dataclasses.replace(host, packages=(*packages.packages(host), "nftables", "unattended-upgrades"))
    plan = packages.plan(wide, found(installed=packages.packages(host)), sources_as_written(host))
    assert plan.changes == ("not installed: nftables, unattended-upgrades",)


def test_a_host_without_a_mirror_is_refused_with_the_fix(host):
    with pytest.raises(ValueError, match="no mirror"):
        packages.plan(host, found(mirror=None), {})


def test_dockers_own_repository_checks_its_keys_fingerprint(env):
    host = make_host(env, docker_from="docker")
    plan = packages.plan(host, found(), {})
    fetch = plan.steps[0]
    assert "9DC858229FC7DD38854AE2D88D81803C0EBFCD88" in fetch.argv and "curl" in host.distro.base_packages + \
        packages.packages(host)
    install = plan.steps[-1].argv
    assert "docker-ce" in install and "docker-compose-plugin" in install and "docker.io" not in install


def test_the_fact_parses_installed_packages_mirror_release_and_container():
    text = ("\n=====opskit:installed=====\nsudo 1.9.13p3-1\ndocker.io 26.1.5\n=====opskit:mirror=====\n"
            f"{MIRROR}\n=====opskit:os_release=====\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"
            "VERSION_ID=\"12\"\n=====opskit:virtualization=====\ndocker\n")
    p = parse_packages(text)
    assert p.installed == {"sudo": "1.9.13p3-1", "docker.io": "26.1.5"} and p.mirror == MIRROR
    assert (p.os_release["ID"], p.os_release["VERSION_ID"]) == ("debian", "12") and p.in_container
    assert not parse_packages(text.replace("docker\n", "none\n")).in_container
