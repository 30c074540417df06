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
    now = status.parse_status(output)
    assert now.current == "abc"
    states = now.services
    assert [(s.service, s.state, s.health, s.image) for s in states] == [
        ("api", "running", "healthy", "p/api:1"), ("worker", "running", "-", "p/worker:1")]
    assert states[0].image_age_days == 1.0 and states[1].image_age_days is None
    assert "current release: abc" in status.table(now)
    assert now.certificate_failures is None and "certificates" not in status.table(now)


def test_status_argv_is_one_round_trip():
    argv = status.status_argv("/srv/app", "p")
    assert argv[:2] == ["sh", "-c"] and argv[2].count("#####fact:") == 4
    assert status.status_argv("/srv/app", "p", with_acme=True)[2].count("#####fact:") == 5


BASE = ("#####fact:on_disk\n=====opskit:current=====\nreleases/abc\n#####exit:0\n"
        "#####fact:clock\n1735776000.0\n#####exit:0\n#####fact:containers\n[]\n#####exit:0\n"
        "#####fact:images\n\n#####exit:0\n")
FAILED = json.dumps({"level": "error", "logger": "tls.obtain", "msg": "could not get certificate from issuer",
                     "identifier": "flower.example.com",
                     "error": "HTTP 400 urn:ietf:params:acme:error:connection - 10.0.0.9:80: connection refused"})
OBTAINED = json.dumps({"level": "info", "logger": "tls.obtain", "msg": "certificate obtained successfully",
                       "identifier": "app.example.com"})


def test_status_names_each_domain_caddy_could_not_get_a_certificate_for_with_its_reason():
    now = status.parse_status(BASE + f"#####fact:acme\n{OBTAINED}\n{FAILED}\n#####exit:0\n", with_acme=True)
    assert now.certificate_failures == {
        "flower.example.com": "HTTP 400 urn:ietf:params:acme:error:connection - 10.0.0.9:80: connection refused"}
    shown = status.table(now)
    assert "flower.example.com: HTTP 400 urn:ietf:params:acme:error:connection - 10.0.0.9:80: connection refused" \
        in shown and "app.example.com" not in shown


def test_status_with_every_certificate_obtained_says_so():
    now = status.parse_status(BASE + f"#####fact:acme\n{OBTAINED}\n#####exit:0\n", with_acme=True)
    assert now.certificate_failures == {} and "no failed ACME attempt" in status.table(now)


def test_status_never_reports_certificates_fine_from_a_log_it_could_not_read():
    for tail, why in (("#####fact:acme\n\n#####exit:3\n", "no caddy container is running"),
                      ("#####fact:acme\n", "the connection dropped"), ("", "the connection dropped")):
        now = status.parse_status(BASE + tail, with_acme=True)
        assert now.certificate_failures is None and now.certificates_unread == why, tail
        assert f"certificates: unknown, Caddy's log could not be read ({why})" in status.table(now)
