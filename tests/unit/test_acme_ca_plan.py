"""Pebble and challtestsrv beside the simulated VPS (`opskit.sim.acme_ca`): what `up` and `down`
would do from each state, as data."""

from __future__ import annotations

from opskit.sim import acme_ca
from opskit.sim.vps_config import BIND, NETWORK


def _argvs(plan) -> list[list[str]]:
    return [list(step.argv) for step in plan]


def test_from_nothing_challtestsrv_starts_first_then_pebble_both_on_the_vps_network():
    argvs = _argvs(acme_ca.plan_up({acme_ca.DNS: None, acme_ca.PEBBLE: None}, image="img"))
    assert [a[:5] for a in argvs] == [["docker", "run", "--detach", "--name", acme_ca.DNS],
                                     ["docker", "run", "--detach", "--name", acme_ca.PEBBLE]]
    for argv in argvs:
        assert argv[argv.index("--network") + 1] == NETWORK
        # management ports reach this machine's loopback only, never another address
        published = [argv[i + 1] for i, a in enumerate(argv) if a == "--publish"]
        assert published and all(p.startswith(f"{BIND}::") for p in published), published


def test_pebble_answers_under_the_name_the_nested_caddy_resolves_and_the_directory_uses_it():
    argv = acme_ca.run_argv(acme_ca.PEBBLE, "img")
    aliases = [argv[i + 1] for i, a in enumerate(argv) if a == "--network-alias"]
    assert acme_ca.HOSTNAME in aliases and "." in acme_ca.HOSTNAME  # single-label names go unforwarded
    assert acme_ca.DIRECTORY.startswith(f"https://{acme_ca.HOSTNAME}:")


def test_challtestsrv_has_no_default_answer_and_no_challenge_server_of_its_own():
    argv = acme_ca.run_argv(acme_ca.DNS, "img")
    command = argv[argv.index("img") + 1:]
    for flag in ("-defaultIPv4", "-defaultIPv6", "-http01", "-https01", "-tlsalpn01"):
        assert command[command.index(flag) + 1] == "", flag


def test_running_pair_needs_nothing_and_a_stopped_one_is_made_anew():
    assert len(acme_ca.plan_up({acme_ca.DNS: "running", acme_ca.PEBBLE: "running"})) == 0
    argvs = _argvs(acme_ca.plan_up({acme_ca.DNS: "running", acme_ca.PEBBLE: "exited"}, image="img"))
    assert argvs[0] == ["docker", "rm", "--force", acme_ca.PEBBLE] and argvs[1][:2] == ["docker", "run"]
    assert len(argvs) == 2


def test_down_removes_only_what_exists():
    assert _argvs(acme_ca.plan_down({acme_ca.DNS: "exited", acme_ca.PEBBLE: None})) == [
        ["docker", "rm", "--force", acme_ca.DNS]]
    assert len(acme_ca.plan_down({acme_ca.DNS: None, acme_ca.PEBBLE: None})) == 0


def test_pebble_validates_every_order_and_reuses_no_authorization():
    argv = acme_ca.run_argv(acme_ca.PEBBLE, "pebble:x")
    assert argv[argv.index("--env") + 1] == "PEBBLE_AUTHZREUSE=0" and argv.index("--env") < argv.index("pebble:x")
