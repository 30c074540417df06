"""`invoke status` reads the facts of one round trip: the current release, the containers, the images."""

from __future__ import annotations

import json

from opskit import status
from opskit.layout import ONEOFF_LABEL, SERVICE_LABEL


def _container(service, oneoff="False", health=None):
    state = {"Status": "running", "StartedAt": "2025-01-01T00:00:00Z"}
    if health:
        state["Health"] = {"Status": health}
    return {"Id": service * 8, "Name": f"/p-{service}-1", "Image": "sha256:1",
            "Config": {"Image": f"p/{service}:1", "Labels": {SERVICE_LABEL: service, ONEOFF_LABEL: oneoff}},
            "State": state, "HostConfig": {}}


def test_status_of_each_service():
    inspect = json.dumps([_container("worker"), _container("api", health="healthy"), _container("api", "True")])
    output = ("#####fact:on_disk\n=====opskit:current=====\nreleases/abc\n#####exit:0\n"
              "#####fact:clock\n1735776000.0\n#####exit:0\n"
              f"#####fact:containers\n{inspect}\n#####exit:0\n"
              "#####fact:images\np/api:1 sha256:1 2025-01-01 00:00:00 +0000 UTC\n#####exit:0\n")
    current, states = status.parse_status(output)
    assert current == "abc"
    assert [(s.service, s.state, s.health, s.image) for s in states] == [
        ("api", "running", "healthy", "p/api:1"), ("worker", "running", "-", "p/worker:1")]
    assert states[0].image_age_days == 1.0 and states[1].image_age_days is None
    assert "current release: abc" in status.table(current, states)


def test_status_argv_is_one_round_trip():
    argv = status.status_argv("/srv/app", "p")
    assert argv[:2] == ["sh", "-c"] and argv[2].count("#####fact:") == 4
