"""The docker facts' parsers: containers from `docker inspect`, images, compose's dry-run plan."""

from __future__ import annotations

import json

import pytest

from opskit.facts import docker
from opskit.facts.base import Output
from opskit.layout import ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL, compose_argv


def test_docker_times():
    assert docker.parse_time("0001-01-01T00:00:00Z") is None
    assert docker.parse_time("2025-01-01T00:00:01.5Z") == pytest.approx(1735689601.5)
    assert docker.parse_time("2025-01-01T01:00:01+01:00") == pytest.approx(1735689601.0)


def _inspect(service="redis", **over):
    c = {
        "Id": "a" * 64, "Name": f"/jobagent-{service}-1", "Image": "sha256:" + "1" * 64,
        "RestartCount": 2,
        "Config": {"Image": "opskit/redis:7", "Env": ["REDIS_PASSWORD=s3cret-value", "PATH=/bin"],
                   "Labels": {SERVICE_LABEL: service, PROJECT_LABEL: "jobagent",
                              docker.CONFIG_HASH_LABEL: "f" * 64, ONEOFF_LABEL: "False"}},
        "State": {"Status": "running", "ExitCode": 0, "OOMKilled": False, "StartedAt": "2025-01-01T00:00:00Z",
                  "Health": {"Status": "healthy"}},
        "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"},
                       "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "5"}},
                       "PortBindings": {}},
        "NetworkSettings": {"Ports": {"6379/tcp": None}},
    }
    for k, v in over.items():
        c[k] = v
    return c


def test_containers_from_inspect():
    [c] = docker.parse_containers(json.dumps([_inspect()]))
    assert (c.service, c.name, c.status, c.health, c.restart_policy, c.restart_count) == \
        ("redis", "jobagent-redis-1", "running", "healthy", "unless-stopped", 2)
    assert c.log_options == {"max-size": "10m", "max-file": "5"} and c.ports == ()
    assert c.env["REDIS_PASSWORD"] == "s3cret-value"
    assert "s3cret" not in repr(c)  # env holds secrets: never in a report
    assert c.config_hash == "f" * 64


def test_published_ports_from_bindings_and_live_state():
    c = _inspect(HostConfig={"PortBindings": {"6379/tcp": [{"HostIp": "", "HostPort": "6379"}]}},
                 NetworkSettings={"Ports": {"6379/tcp": [{"HostIp": "0.0.0.0", "HostPort": "6379"},
                                                          {"HostIp": "::", "HostPort": "6379"}]}})
    [parsed] = docker.parse_containers(json.dumps([c]))
    assert sorted(str(p) for p in parsed.ports) == ["0.0.0.0:6379->6379/tcp", "0.0.0.0:6379->6379/tcp",
                                                    ":::6379->6379/tcp"]
    assert all(p.is_public for p in parsed.ports)
    pg = _inspect("postgres", HostConfig={"PortBindings": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5433"}]}})
    [p] = docker.parse_containers(json.dumps([pg]))[0].ports
    assert str(p) == "127.0.0.1:5433->5432/tcp" and not p.is_public


def test_one_off_containers_are_marked():
    c = _inspect()
    c["Config"]["Labels"][ONEOFF_LABEL] = "True"
    assert docker.parse_containers(json.dumps([c]))[0].oneoff


def test_the_containers_fact_asks_for_the_project_one_offs_included():
    argv = docker.containers("jobagent").argv
    assert argv[-2:] == ("--filter", f"label={PROJECT_LABEL}=jobagent")
    assert not [a for a in argv[4:] if ONEOFF_LABEL in a]


def test_image_ids():
    listing = f"jobagent/api:abc sha256:{'2' * 64}\n<none>:<none> sha256:{'3' * 64}\nopskit/redis:7 sha256:{'4' * 64}\n"
    assert docker.image_ids(listing) == {"jobagent/api:abc": "sha256:" + "2" * 64, "opskit/redis:7": "sha256:" + "4" * 64}


def test_images_with_their_creation_time():
    listing = f"jobagent/api:abc sha256:{'2' * 64} 2025-01-01 00:00:00 +0000 UTC\n"
    image = docker.parse_images(listing)["jobagent/api:abc"]
    assert image.created == pytest.approx(1735689600.0) and image.id == "sha256:" + "2" * 64


def test_layers_are_chain_ids():
    from opskit.ship import chain_ids

    inspect = '[{"RootFS": {"Layers": ["sha256:x", "sha256:y"]}}]'
    assert docker.layers().parse(Output(inspect)) == set(chain_ids(["sha256:x", "sha256:y"]))
    assert docker.layers().parse(Output("")) == frozenset()


def test_compose_dry_run_plan_keeps_the_first_action():
    text = (" DRY-RUN MODE -  Container jobagent-redis-1  Recreate\n"
            " DRY-RUN MODE -  Container jobagent-api-1  Running\n"
            " DRY-RUN MODE -  Container jobagent-redis-1  Recreated\n"
            " DRY-RUN MODE -  Container jobagent-redis-1  Healthy\n"
            "some warning\n")
    assert docker.parse_compose_plan(text) == {"jobagent-redis-1": "Recreate", "jobagent-api-1": "Running"}


def test_the_compose_plan_runs_on_the_release_folder_and_reads_both_streams():
    fact = docker.compose_plan("/srv/app/releases/abc")
    assert list(fact.argv) == compose_argv("/srv/app/releases/abc", "--dry-run", "up", "--no-build", "-d")
    plan = fact.parse(Output("", " DRY-RUN MODE -  Container jobagent-api-1  Running\n", 0))
    assert plan.actions == {"jobagent-api-1": "Running"}


def test_the_user_a_container_runs_as_is_its_configured_one():
    c = _inspect()
    assert docker.parse_containers(json.dumps([c]))[0].user == ""  # none set: the image's (root here)
    c["Config"]["User"] = "10001:10001"
    assert docker.parse_containers(json.dumps([c]))[0].user == "10001:10001"
