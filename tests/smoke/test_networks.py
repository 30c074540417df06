"""Networks by need, checked from inside the containers (issue 13, point 5): Caddy reaches only the
API, the frontend and Flower; the frontend reaches Postgres and the API, not Redis or Flower; Redis
and Postgres answer only the services that use them.

Each container is probed from its own network namespace (a throwaway container of the API image
joined to it with `--network container:`, so the probed image needs no tools): every listening
service by name, as Docker's DNS answers that container, and by each address the service has on
any network. Where there must be no way, the name must not resolve and no address may connect.
"""

from __future__ import annotations

import pytest

from opskit import hardening
from opskit.facts import read

from .checks import listing, problem

pytestmark = pytest.mark.exposure

#: at most this many probes at once (each one SSH channel of the shared connection)
PARALLEL = 4


@pytest.fixture(scope="module")
def confined(remote, env):
    return [c for c in read(remote, hardening.confined_fact(env.project), what="the containers' networks",
                            more="docker ps -a") if c.running]


@pytest.fixture(scope="module")
def reach(remote, env, confined):
    """{(source service, target service): Reach} from every running container of the project."""
    api = next((c for c in confined if c.service == "api"), None)
    if api is None:
        pytest.fail(problem("no running api container: its image runs the probes",
                            f"docker ps -a --filter label=com.docker.compose.project={env.project}"))
    return hardening.probe_all(remote, confined, hardening.ports(env), api.image_ref, PARALLEL)


def _seen(reach, confined, pair):
    source, target = pair
    by_service = {c.service: c for c in confined}
    for name in pair:
        assert name in by_service, problem(f"{name}: no running container of the project to probe",
                                           "docker ps -a")
    seen = reach.get(pair)
    assert isinstance(seen, hardening.Reach), problem(
        f"the probe from {source} ({by_service[source].name}) did not run: {seen}",
        f"docker inspect --format '{{{{.State.Status}}}}' {by_service[source].name}")
    return seen, by_service[source], by_service[target]


@pytest.mark.parametrize("pair", sorted(hardening.MUST_REACH), ids="->".join)
def test_service_reaches_what_it_needs(pair, reach, confined):
    seen, source, target = _seen(reach, confined, pair)
    assert seen.is_open, problem(
        f"{source.service} cannot reach {seen}; it is on {listing(source.networks) or 'no network'}, "
        f"{target.service} on {listing(target.networks) or 'no network'}",
        f"docker inspect --format '{{{{json .NetworkSettings.Networks}}}}' {source.name} {target.name}")


@pytest.mark.parametrize("pair", sorted(hardening.MUST_NOT_REACH), ids="->".join)
def test_service_cannot_reach_what_it_must_not(pair, reach, confined):
    seen, source, target = _seen(reach, confined, pair)
    shared = sorted(set(source.networks) & set(target.networks))
    assert not seen.is_open and not seen.resolved, problem(
        f"{source.service} reaches {seen}"
        + (f": they share the network(s) {listing(shared)}" if shared else ""),
        f"docker inspect --format '{{{{json .NetworkSettings.Networks}}}}' {source.name} {target.name}")
