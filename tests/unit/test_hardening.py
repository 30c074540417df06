"""Hardened containers and networks by need, read from the rendered compose file of every
environment (issue 13, points 4 and 5), and the reader of docker-bench-security's section 5.
The expected values are tables written here, not read from opskit/hardening.py, so a change to
that data must be made twice, on purpose."""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys

import pytest
import yaml

from opskit import ROOT, hardening, render
from opskit.errors import RenderError
from tests.conftest import ENVIRONMENTS

SERVICES = ("api", "beat", "caddy", "flower", "frontend", "postgres", "redis", "worker")

#: capabilities added back after `cap_drop: [ALL]`; every other service gets none
CAP_ADD = {"caddy": ["NET_BIND_SERVICE"]}
#: services allowed a writable root filesystem (documented in opskit/hardening.py): none
WRITABLE_ROOT: set = set()
#: services allowed to run as root (the image's default user): none
ROOT_USER: set = set()
#: where each service may write besides its volumes
TMPFS = {
    "postgres": {"/var/run/postgresql", "/tmp"}, "redis": set(), "api": {"/tmp"}, "worker": {"/tmp"},
    "beat": {"/tmp"}, "flower": {"/tmp"}, "frontend": {"/tmp"}, "caddy": {"/tmp"},
}
#: who must reach whom (the issue's point 5); any pair not here must share no network
MUST_TALK = {
    frozenset(pair) for pair in [
        ("caddy", "api"), ("caddy", "frontend"), ("caddy", "flower"),
        ("frontend", "api"), ("frontend", "postgres"),
        ("api", "postgres"), ("worker", "postgres"),
        ("api", "redis"), ("worker", "redis"), ("beat", "redis"), ("flower", "redis"),
    ]
}
#: pairs that share a network although neither needs the other: members of the Redis network
#: reach each other there, and the admin role's users the same on `db` (each already holds the
#: other's credentials, so it opens nothing new)
INCIDENTAL = {
    frozenset(pair) for pair in [
        ("api", "worker"), ("api", "beat"), ("api", "flower"), ("worker", "beat"), ("worker", "flower"),
        ("beat", "flower"),
    ]
}
#: the pairs the issue names as must-not: each shares no network
MUST_NOT_TALK = {
    frozenset(pair) for pair in [
        ("caddy", "redis"), ("caddy", "postgres"), ("frontend", "redis"), ("frontend", "flower"),
        ("beat", "postgres"), ("flower", "postgres"), ("caddy", "worker"), ("caddy", "beat"),
        ("frontend", "worker"), ("frontend", "beat"), ("redis", "postgres"),
    ]
}
#: networks that need the outside: Caddy's (published ports, ACME) and Postgres's (published on
#: loopback, which Docker does only through a non-internal network)
NOT_INTERNAL = {"web", "db"}


_RENDERED: dict = {}


@pytest.fixture(params=ENVIRONMENTS)
def compose(request, make_env):
    """The rendered compose file of each environment, rendered once (bcrypt makes a render slow)."""
    if request.param not in _RENDERED:
        release = render.render(make_env(request.param))
        _RENDERED[request.param] = release.files["docker-compose.yml"].content
    return yaml.safe_load(_RENDERED[request.param])


def test_the_data_documents_every_exception():
    assert hardening.problems() == []


def test_every_service_is_covered(compose):
    assert sorted(compose["services"]) == sorted(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_no_new_privileges(compose, name):
    assert compose["services"][name]["security_opt"] == ["no-new-privileges:true"]


@pytest.mark.parametrize("name", SERVICES)
def test_all_capabilities_dropped_and_only_the_documented_added(compose, name):
    svc = compose["services"][name]
    assert svc["cap_drop"] == ["ALL"]
    assert svc.get("cap_add", []) == CAP_ADD.get(name, [])


@pytest.mark.parametrize("name", SERVICES)
def test_pids_limited(compose, name):
    limit = compose["services"][name]["pids_limit"]
    assert isinstance(limit, int) and 0 < limit <= 1024


@pytest.mark.parametrize("name", SERVICES)
def test_read_only_root_unless_documented(compose, name):
    assert compose["services"][name]["read_only"] is (name not in WRITABLE_ROOT)


@pytest.mark.parametrize("name", SERVICES)
def test_writes_go_to_bounded_tmpfs_only_where_needed(compose, name):
    mounts = compose["services"][name].get("tmpfs", [])
    assert {m.split(":")[0] for m in mounts} == TMPFS[name]
    assert all("size=" in m for m in mounts), mounts  # a tmpfs without a size could take all memory


@pytest.mark.parametrize("name", SERVICES)
def test_not_root_unless_documented(compose, name):
    user = compose["services"][name].get("user")
    if name in ROOT_USER:
        return
    assert user, f"{name} runs as the image's user"
    assert user.split(":")[0] not in ("root", "0")


def test_beat_schedule_is_on_its_tmpfs(compose):
    beat = compose["services"]["beat"]
    schedule = beat["command"][beat["command"].index("--schedule") + 1]
    assert any(schedule.startswith(m.split(":")[0] + "/") for m in beat["tmpfs"])


def test_postgres_socket_dir_belongs_to_its_user(compose):
    pg = compose["services"]["postgres"]
    socket = next(m for m in pg["tmpfs"] if m.startswith("/var/run/postgresql:"))
    uid, gid = pg["user"].split(":")
    assert f"uid={uid}" in socket and f"gid={gid}" in socket


# -- networks by need ------------------------------------------------------------------------------


def talking_pairs(compose) -> set:
    """Pairs of services that share at least one network, derived from the rendered file."""
    nets = {name: set(svc.get("networks") or ["default"]) for name, svc in compose["services"].items()}
    return {frozenset((a, b)) for a, b in itertools.combinations(sorted(nets), 2) if nets[a] & nets[b]}


def test_every_service_names_its_networks_and_no_default_network(compose):
    declared = set(compose["networks"])
    for name, svc in compose["services"].items():
        assert svc.get("networks"), f"{name} is on the default network"
        assert set(svc["networks"]) <= declared
    assert "default" not in declared


def test_reachability_matrix_is_the_intended_one(compose):
    assert talking_pairs(compose) == MUST_TALK | INCIDENTAL


def test_pairs_that_must_not_talk_share_no_network(compose):
    assert not (talking_pairs(compose) & MUST_NOT_TALK)
    assert not (MUST_TALK & MUST_NOT_TALK)


def test_only_networks_that_need_the_outside_are_not_internal(compose):
    external = {name for name, net in compose["networks"].items() if not (net or {}).get("internal")}
    assert external == NOT_INTERNAL


def test_published_services_sit_on_a_network_that_can_publish(compose):
    for name, svc in compose["services"].items():
        if svc.get("ports"):
            assert any(not (compose["networks"][n] or {}).get("internal") for n in svc["networks"]), name


def test_the_probes_expect_what_the_tables_say(compose):
    """What the smoke suite and the integration test probe agrees with the tables above."""
    assert {frozenset(p) for p in hardening.MUST_REACH} <= MUST_TALK
    assert not ({frozenset(p) for p in hardening.MUST_NOT_REACH} & talking_pairs(compose))
    assert {frozenset(p) for p in hardening.MUST_NOT_REACH} >= MUST_NOT_TALK - {
        frozenset(p) for p in [("caddy", "worker"), ("caddy", "beat"), ("frontend", "worker"), ("frontend", "beat")]}


def test_a_service_without_a_confinement_stops_the_render():
    context = {"services": [{"name": "api"}, {"name": "newcomer"}]}
    with pytest.raises(RenderError, match="newcomer"):
        hardening.apply(context)


def test_an_undocumented_exception_is_a_problem():
    loose = hardening.Confinement(user=None, pids_limit=0, read_only=False,
                                  cap_add=(hardening.Capability("SYS_ADMIN", ""),))
    assert len(loose.problems("x")) == 4
    assert hardening.Confinement(user="0:0", pids_limit=5).problems("x") != []


# -- scripts/docker_bench.py: docker-bench-security's section 5, counted per container -------------


spec = importlib.util.spec_from_file_location("docker_bench", ROOT / "scripts/docker_bench.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # its dataclasses look their module up there
spec.loader.exec_module(bench)

# the shape of docker-bench-security 1.6.0's section 5 output (`-b`: no colours), shortened
SAMPLE = """\
Section A - Check results

[INFO] 5 - Container Runtime
[PASS] 5.1 - Ensure swarm mode is not Enabled, if not needed (Automated)
[WARN] 5.2 - Ensure that, if applicable, an AppArmor Profile is enabled (Automated)
[WARN]      * No AppArmorProfile Found: jobagent-caddy-1
[WARN]      * No AppArmorProfile Found: jobagent-api-1
[PASS] 5.3 - Ensure that, if applicable, SELinux security options are set (Automated)
[WARN] 5.4 - Ensure that Linux kernel capabilities are restricted within containers (Automated)
[WARN]      * Capabilities added: CapAdd=[SYS_ADMIN] to jobagent-worker-1
[PASS] 5.5 - Ensure that privileged containers are not used (Automated)
[WARN] 5.8 - Ensure privileged ports are not mapped within containers (Automated)
[WARN]      * Privileged Port in use: 80 in jobagent-caddy-1
[WARN]      * Privileged Port in use: 443 in jobagent-caddy-1
[WARN] 5.13 - Ensure that the container's root filesystem is mounted as read only (Automated)
[WARN]       * Container running with root FS mounted R/W: jobagent-frontend-1
[WARN] 5.14 - Ensure that incoming container traffic is bound to a specific host interface (Automated)
[WARN]       * Port being bound to wildcard IP: 0.0.0.0 in jobagent-caddy-1
[INFO] 5.17 - Ensure that host devices are not directly exposed to containers (Manual)
[INFO]       * Container has devices exposed directly: jobagent-redis-1
[WARN] 5.26 - Ensure that the container is restricted from acquiring additional privileges (Automated)
[WARN]       * Privileges not restricted: jobagent-frontend-1
[INFO] 5.28 - Ensure that Docker commands always make use of the latest version of their image (Manual)
[WARN] 5.29 - Ensure that the PIDs cgroup limit is used (Automated)
[WARN]       * PIDs limit not set: jobagent-frontend-1
[INFO] 5.30 - Ensure that Docker's default bridge "docker0" is not used (Manual)
[WARN] 5.1 - Ensure swarm mode is not Enabled, if not needed (Automated)

Section C - Score

[INFO] Checks: 31
[INFO] Score: 5
"""


def colour(text: str) -> str:
    return re.sub(r"^\[(\w+)\]", lambda m: f"\x1b[1;31m[{m.group(1)}]\x1b[0m", text, flags=re.MULTILINE)


def test_warns_are_counted_per_container_and_check():
    report = bench.parse(SAMPLE)
    assert report.warns == {
        "jobagent-caddy-1": {"5.2": 1, "5.8": 2, "5.14": 1},
        "jobagent-api-1": {"5.2": 1},
        "jobagent-worker-1": {"5.4": 1},
        "jobagent-frontend-1": {"5.13": 1, "5.26": 1, "5.29": 1},
        bench.ENGINE: {"5.1": 1},
    }
    assert report.total("jobagent-caddy-1") == 4


def test_colours_change_nothing():
    assert bench.parse(colour(SAMPLE)).warns == bench.parse(SAMPLE).warns


def test_info_items_and_passes_are_not_warnings():
    report = bench.parse(SAMPLE)
    assert "jobagent-redis-1" not in report.warns
    assert report.checks["5.3"] == "PASS" and report.checks["5.17"] == "INFO"


def test_documented_decisions_are_told_apart():
    left = bench.undocumented(bench.parse(SAMPLE))
    # Caddy's 5.2/5.8/5.14 and the API's 5.2 are decisions; the rest must be fixed
    assert left == [("jobagent-frontend-1", "5.13", 1), ("jobagent-frontend-1", "5.26", 1),
                    ("jobagent-frontend-1", "5.29", 1), ("jobagent-worker-1", "5.4", 1)]


def test_service_names_come_from_compose_container_names():
    assert bench.service_of("jobagent-caddy-1") == "caddy"
    assert bench.service_of("trackd-1a2b3c4d-flower-1") == "flower"
    assert bench.service_of("standalone") == "standalone"


def test_every_exception_names_a_check_services_and_a_reason():
    for check, services, why in hardening.BENCH_EXCEPTIONS:
        assert re.fullmatch(r"5\.\d+", check) and why
        assert services == "all" or set(services.split()) <= set(hardening.SERVICES)


def test_the_summary_marks_decisions_and_counts_the_rest():
    text = bench.summary(bench.parse(SAMPLE))
    assert "5.8*x2" in text and "undocumented section-5 warnings: 4" in text


def test_the_script_parses_a_saved_output_and_exits_by_what_is_left(tmp_path, capsys):
    saved = tmp_path / "bench.txt"
    saved.write_text(SAMPLE)
    assert bench.main(["--parse", str(saved)]) == 1
    clean = "\n".join(line for line in SAMPLE.splitlines() if "frontend" not in line and "worker" not in line)
    saved.write_text(clean)
    assert bench.main(["--parse", str(saved)]) == 0
    assert "undocumented section-5 warnings: 0" in capsys.readouterr().out
