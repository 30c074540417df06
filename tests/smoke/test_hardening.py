"""Every container of the project runs confined as opskit/hardening.py decides (issue 13, point
4): no privilege gained by exec, all capabilities dropped but the documented ones, a PIDs limit,
a read-only root filesystem and a non-root user, except where that file documents why not."""

from __future__ import annotations

import pytest

from opskit import hardening
from opskit.facts import read

from .checks import listing, problem

pytestmark = pytest.mark.containers


@pytest.fixture(scope="module")
def confined(remote, env):
    return read(remote, hardening.confined_fact(env.project), what="the containers' confinement",
                more="docker ps -a")


def _container(confined, service, server) -> hardening.Confined:
    found = sorted((c for c in confined if c.service == service), key=lambda c: not c.running)
    assert found, problem(f"{service}: no container of the project", server.compose_hint("ps", "-a"))
    return found[0]


def _decision(service) -> hardening.Confinement:
    decision = hardening.SERVICES.get(service)
    assert decision is not None, problem(f"{service}: opskit/hardening.py has no confinement for this service")
    return decision


def _inspect(c, what: str) -> str:
    return f"docker inspect --format '{{{{json {what}}}}}' {c.name}"


def test_service_gains_no_new_privileges(service, confined, server):
    c = _container(confined, service, server)
    assert c.has_no_new_privileges, problem(
        f"{service} ({c.name}) runs without no-new-privileges (security options: {listing(c.security_opt) or 'none'}): "
        "a setuid binary in it can gain root", _inspect(c, ".HostConfig.SecurityOpt"))
    assert not c.privileged, problem(f"{service} ({c.name}) is privileged", _inspect(c, ".HostConfig.Privileged"))


def test_service_drops_every_capability_but_its_documented_ones(service, confined, server):
    c = _container(confined, service, server)
    allowed = {cap.name for cap in _decision(service).cap_add}
    assert c.drops_all_capabilities, problem(
        f"{service} ({c.name}) keeps Docker's default capabilities (cap_drop: {listing(c.cap_drop) or 'nothing'})",
        _inspect(c, ".HostConfig.CapDrop"))
    extra = sorted({cap.upper().removeprefix("CAP_") for cap in c.cap_add} - allowed)
    assert not extra, problem(
        f"{service} ({c.name}) has capabilities added that opskit/hardening.py does not document: {listing(extra)}",
        _inspect(c, ".HostConfig.CapAdd"))


def test_service_has_a_pids_limit(service, confined, server):
    c = _container(confined, service, server)
    assert c.pids_limit > 0, problem(
        f"{service} ({c.name}) has no PIDs limit: a fork bomb in it takes the whole server",
        _inspect(c, ".HostConfig.PidsLimit"))


def test_service_root_filesystem_is_read_only(service, confined, server):
    c = _container(confined, service, server)
    assert c.read_only or not _decision(service).read_only, problem(
        f"{service} ({c.name}) has a writable root filesystem: an intruder can change its programs",
        _inspect(c, ".HostConfig.ReadonlyRootfs"))


def test_service_does_not_run_as_root(service, confined, server):
    c = _container(confined, service, server)
    assert not c.is_root or _decision(service).user is None, problem(
        f"{service} ({c.name}) runs as root (user {c.user or 'unset, the image default'!r}); "
        f"opskit/hardening.py wants {_decision(service).user}", _inspect(c, ".Config.User"))
