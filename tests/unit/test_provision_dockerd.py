"""The dockerd item's plan from parsed facts: daemon.json as wanted, validated before it replaces the
old one; a reload first (live-restore), a restart only for keys a reload does not apply, and never a
restart that would take running containers down while live-restore could have kept them."""

from __future__ import annotations

import json

import pytest

from opskit.facts import system
from opskit.facts.files import FileState
from opskit.provision import dockerd
from opskit.provision.item import Host, ItemPlan

from .provision_host import make_host

PATH = dockerd.DAEMON_JSON
DEFAULT_INFO = {"ServerVersion": "26.1.5+dfsg1", "LiveRestoreEnabled": False, "LoggingDriver": "json-file",
                "SecurityOptions": ["name=seccomp,profile=builtin"]}
WANTED_INFO = {**DEFAULT_INFO, "LiveRestoreEnabled": True,
               "SecurityOptions": ["name=seccomp,profile=builtin", "name=no-new-privileges"]}



@pytest.fixture
def host(env):
    def make(**settings) -> Host:
        return make_host(env, **settings)
    return make


def daemon_json(content: dict | str | None) -> dict:
    if content is None:
        return {PATH: FileState(PATH, None)}
    text = content if isinstance(content, str) else dockerd.render(content)
    return {PATH: FileState(PATH, text.encode(), 0o644, "root", "root")}


def running(info: dict | None = None, unit="active") -> system.Dockerd:
    return system.Dockerd(True, unit, dict(WANTED_INFO if info is None else info))


def titles(p) -> list[str]:
    return [s.title.split(" (")[0] for s in p.steps]


# -- the file ------------------------------------------------------------------------------------------


def test_the_file_is_deterministic_json_with_the_inventorys_log_cap(host, env):
    h = host()
    text = dockerd.render(dockerd.ours(h))
    assert json.loads(text) == {"live-restore": True, "log-driver": "json-file", "userland-proxy": False,
                                "no-new-privileges": True,
                                "log-opts": {"max-size": env.logging.max_size, "max-file": str(env.logging.max_files)}}
    assert list(json.loads(text)) == sorted(json.loads(text)) and text.endswith("}\n")
    assert text == dockerd.render(dict(reversed(list(dockerd.ours(h).items()))))


def test_keys_that_are_not_ours_are_kept_and_ours_win(host):
    h = host()
    p = dockerd.plan(h, daemon_json({"registry-mirrors": ["https://m.example"], "live-restore": False}),
                     running(DEFAULT_INFO))
    written = json.loads(p.steps[0].stdin)
    assert written["registry-mirrors"] == ["https://m.example"] and written["live-restore"] is True


def test_a_broken_file_is_replaced_whole(host):
    p = dockerd.plan(host(), daemon_json("{not json"), running(DEFAULT_INFO))
    assert p.changes[0] == f"{PATH} is not a JSON object: it is replaced whole"
    assert json.loads(p.steps[0].stdin) == dockerd.ours(host())
    assert titles(p)[-1] == "restart dockerd for log-opts, no-new-privileges, userland-proxy"


def test_the_new_file_is_validated_by_dockerd_before_it_replaces_the_old(host):
    p = dockerd.plan(host(), daemon_json(None), running(DEFAULT_INFO))
    assert "dockerd --validate --config-file %s" in p.steps[0].argv


# -- which of reload and restart -----------------------------------------------------------------------


def test_docker_with_its_defaults_is_reloaded_then_restarted(host):
    p = dockerd.plan(host(), daemon_json(None), running(DEFAULT_INFO))
    # live-restore alone first: a reload applies nothing of a file that fails its check
    assert titles(p) == [f"write {PATH} with only live-restore changed", "reload dockerd", f"write {PATH}",
                         "restart dockerd for log-opts, no-new-privileges, userland-proxy"]
    assert p.steps[0].stdin == b'{\n  "live-restore": true\n}\n'
    assert p.steps[1].argv[-1] == "true"  # waits for live-restore on before the restart
    assert "live-restore keeps the containers running" in p.steps[3].title


def test_reload_is_the_only_key_reloadable_of_ours():
    assert dockerd.restart_keys({}, {"live-restore": True}) == []
    assert dockerd.restart_keys({"live-restore": True}, {"live-restore": False}) == []
    assert dockerd.restart_keys({"log-opts": {"max-size": "10m"}}, {"log-opts": {"max-size": "20m"}}) == ["log-opts"]
    assert dockerd.restart_keys(None, {"userland-proxy": True, "log-driver": "json-file"}) == []  # the defaults
    assert dockerd.restart_keys({"registry-mirrors": ["a"]}, {"registry-mirrors": ["b"]}) == []


def test_a_change_of_live_restore_alone_is_a_reload_without_restart(host):
    h = host(live_restore=False)
    old = dockerd.ours(host())
    p = dockerd.plan(h, daemon_json(old), running(WANTED_INFO))
    assert titles(p) == [f"write {PATH}", "reload dockerd"]
    assert "dockerd runs with live-restore on, wanted off" in p.changes
    assert p.steps[1].argv[-1] == "false"


def test_with_live_restore_off_the_reload_comes_before_the_restart(host):
    # a daemon that stops with live-restore on leaves its containers running, and the next one,
    # started with it off, kills them and cancels their restart policy: the stack stays down.
    # Reloaded first, the stopping daemon stops them cleanly and the new one restarts them.
    h = host(live_restore=False, userland_proxy=True)
    old = dockerd.ours(host())
    p = dockerd.plan(h, daemon_json(old), running(WANTED_INFO))
    assert titles(p) == [f"write {PATH} with only live-restore changed", "reload dockerd", f"write {PATH}",
                         "restart dockerd for userland-proxy"]
    assert p.steps[1].argv[-1] == "false" and "running containers restart too" in p.steps[3].title


def test_a_converged_daemon_plans_nothing(host):
    h = host()
    assert dockerd.plan(h, daemon_json(dockerd.ours(h)), running()) == ItemPlan("dockerd")


def test_a_daemon_that_was_not_restarted_since_the_file_changed_is(host):
    h = host()
    p = dockerd.plan(h, daemon_json(dockerd.ours(h)), running(DEFAULT_INFO))
    assert p.changes == ("dockerd runs with live-restore off, wanted on",
                         "dockerd runs with no-new-privileges off, wanted on")
    assert titles(p) == ["reload dockerd", "restart dockerd for no-new-privileges"]


def test_no_new_privileges_off_is_asked_of_the_daemon_too(host):
    h = host(no_new_privileges=False)
    p = dockerd.plan(h, daemon_json(dockerd.ours(h)), running(WANTED_INFO))
    assert p.changes == ("dockerd runs with no-new-privileges on, wanted off",)
    assert titles(p) == ["restart dockerd for no-new-privileges"]


# -- no daemon -----------------------------------------------------------------------------------------


def test_a_bare_host_gets_the_file_and_a_restart_only_if_dockerd_came_meanwhile(host):
    p = dockerd.plan(host(), daemon_json(None), system.Dockerd(False, "inactive", None))
    assert titles(p) == [f"write {PATH}", "restart dockerd if it was started since the facts were read"]
    assert p.steps[1].argv[4] == "if-running"
    assert "command -v dockerd" in " ".join(p.steps[0].argv)  # validated only once dockerd is there
    assert p.notes == (f"dockerd is not installed yet: it starts with {PATH} once installed",)
    again = dockerd.plan(host(), daemon_json(dockerd.ours(host())), system.Dockerd(False, "inactive", None))
    assert again.steps == ()


def test_a_stopped_daemon_is_not_started_and_a_failed_one_is(host):
    h = host()
    stopped = dockerd.plan(h, daemon_json(None), running(info={}, unit="inactive"))
    assert titles(stopped) == [f"write {PATH}"]
    assert stopped.notes == (f"dockerd is not running (inactive): it reads {PATH} when it starts",)
    failed = dockerd.plan(h, daemon_json(None), running(info={}, unit="failed"))
    assert titles(failed) == [f"write {PATH}", "restart dockerd to take daemon.json"]


# -- the fact ------------------------------------------------------------------------------------------


def test_the_dockerd_fact_is_parsed_on_a_bare_box_a_stopped_and_a_running_daemon():
    bare = system.parse_dockerd("=====opskit:dockerd=====\n!absent\n=====opskit:active=====\ninactive\n"
                                "=====opskit:info=====\n!absent\n")
    assert not bare.installed and not bare.answers and bare.live_restore is None
    down = json.dumps({"ID": "", "ServerVersion": "", "LiveRestoreEnabled": False, "ServerErrors": ["Cannot connect"]})
    stopped = system.parse_dockerd(f"=====opskit:dockerd=====\n/usr/sbin/dockerd\n=====opskit:active=====\n"
                                   f"inactive\n=====opskit:info=====\n{down}\n")
    assert stopped.installed and not stopped.answers and stopped.no_new_privileges is None
    up = system.parse_dockerd(f"=====opskit:dockerd=====\n/usr/sbin/dockerd\n=====opskit:active=====\nactive\n"
                              f"=====opskit:info=====\nWARNING: bridge-nf-call\n{json.dumps(WANTED_INFO)}\n")
    assert up.answers and up.live_restore is True and up.logging_driver == "json-file"
    assert up.no_new_privileges is True and up.version == "26.1.5+dfsg1"


def test_the_live_restore_alone_file_leaves_out_what_a_reload_refuses(host):
    # Engine 26.1 fails a reload of any file with "userland-proxy": true ("userland-proxy-path is
    # not set") and then applies nothing, live-restore included
    defaults = {"live-restore": False, "userland-proxy": True, "registry-mirrors": ["https://mirror.example"]}
    p = dockerd.plan(host(), daemon_json(defaults), running({**WANTED_INFO, "LiveRestoreEnabled": False}))
    interim = json.loads(p.steps[0].stdin)
    assert interim == {"live-restore": True, "registry-mirrors": ["https://mirror.example"]}
    assert json.loads(p.steps[2].stdin)["userland-proxy"] is False
