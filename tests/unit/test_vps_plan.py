"""The simulated VPS's plans as data: what up, pin and down do for given facts (no engine)."""

from __future__ import annotations

import io
import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest

from opskit.errors import StepFailed, VpsError
from opskit.sim import kit, kit_plan, vps, vps_plan
from opskit.sim.vps_config import IMAGE, READY_TIMEOUT_S, VpsConfig
from opskit.steps import SERVER, Check, Plan, Run, WriteFile

PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPublicKeyOfThisCheckout opskit-vps@opskit-vps\n"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheVps root@vps"
RUNNING = vps_plan.Container("running", IMAGE, "sha256:vps", True, 2222, {"opskit-vps-net": "net1"})


@pytest.fixture
def config(tmp_path) -> VpsConfig:
    return VpsConfig(state_dir=tmp_path / "state", extra_ports={15433: 5433})


def with_key(**changes) -> vps_plan.VpsFacts:
    return replace(vps_plan.VpsFacts(has_key=True, key_mode=0o600, public_key=PUBLIC, network_id="net1"), **changes)


def argvs(plan) -> list[tuple]:
    return [s.argv for s in plan if isinstance(s, Run)]


def test_from_nothing_up_makes_a_key_then_creates_gives_the_key_starts_and_waits(config):
    plan = vps_plan.plan_up(config, vps_plan.VpsFacts())
    assert [a[:2] for a in argvs(plan)] == [("mkdir", "-p"), ("ssh-keygen", "-q"), ("docker", "network"),
                                            ("docker", "create"), ("docker", "cp"), ("docker", "start"),
                                            ("docker", "exec")]
    keygen = argvs(plan)[1]
    assert keygen[keygen.index("-t") + 1] == "ed25519" and keygen[-1] == str(config.key_file)
    assert argvs(plan)[4] == ("docker", "cp", str(config.public_key_file), "opskit-vps:/etc/vps/authorized_keys")


def test_the_container_boots_systemd_privileged_named_and_keeps_docker_on_a_volume(config):
    create = vps_plan.create_argv(config)
    assert create[:2] == ["docker", "create"] and create[-1] == IMAGE
    # systemd is PID 1: no --init in front of it, and /run as the tmpfs a boot expects
    assert "--privileged" in create and "--init" not in create
    assert [create[i + 1] for i, a in enumerate(create) if a == "--tmpfs"] == ["/run", "/run/lock"]
    assert create[create.index("--name") + 1] == "opskit-vps"
    assert create[create.index("--hostname") + 1] == "vps"
    assert create[create.index("--volume") + 1] == "opskit-vps-docker:/var/lib/docker"
    assert "opskit.vps=1" in create


def test_the_vps_sits_on_a_network_of_its_own_outside_the_pools_its_inner_docker_takes_from(config):
    create = vps_plan.create_argv(config)
    assert create[create.index("--network") + 1] == "opskit-vps-net"
    network = vps_plan.network_argv(config)
    subnet = ipaddress.ip_network(network[network.index("--subnet") + 1])
    # Docker's default pools: an inner network there could cover the VPS's address (seen in CI)
    assert not any(subnet.overlaps(ipaddress.ip_network(p)) for p in ("172.16.0.0/12", "192.168.0.0/16"))
    assert network[-1] == "opskit-vps-net" and "opskit.vps=1" in network


@pytest.mark.parametrize("container, network_id", [
    (replace(RUNNING, networks={"bridge": "b0"}), "net1"),  # made by an older opskit
    (RUNNING, None),  # its network was removed: it could not start again
    (replace(RUNNING, state="exited", networks={"opskit-vps-net": "gone"}), "net1"),
])
def test_a_vps_off_its_network_is_made_again_with_its_volume_kept(config, container, network_id):
    plan = vps_plan.plan_up(config, with_key(container=container, network_id=network_id, given_keys=PUBLIC))
    steps = [a[:3] for a in argvs(plan)]
    assert ("docker", "rm", "--force") in steps and "--volumes" not in argvs(plan)[steps.index(("docker", "rm", "--force"))]
    assert steps.index(("docker", "rm", "--force")) < steps.index(("docker", "create", "--name"))
    assert (("docker", "network", "create") in steps) == (network_id is None)


def test_every_published_port_is_on_loopback(config):
    create = vps_plan.create_argv(config)
    published = [create[i + 1] for i, a in enumerate(create) if a == "-p"]
    assert published == ["127.0.0.1:2222:22", "127.0.0.1:80:80", "127.0.0.1:443:443", "127.0.0.1:443:443/udp",
                         "127.0.0.1:15433:5433"]
    assert all(p.startswith("127.0.0.1:") for p in published)
    assert not any(a.startswith(("--publish-all", "-P", "--network=host")) for a in create)


def test_a_bare_box_lets_root_in_and_a_provisioned_one_the_deploy_user(config):
    assert config.target(bare=True).user == "root" and config.target().user == "deploy"


def test_an_existing_key_is_kept(config):
    assert not any(a[0] == "ssh-keygen" for a in argvs(vps_plan.plan_up(config, with_key())))


def test_a_key_readable_by_others_is_made_private(config):
    assert ("chmod", "0600", str(config.key_file)) in argvs(vps_plan.plan_up(config, with_key(key_mode=0o644)))


def test_a_running_vps_that_has_the_key_is_only_checked(config):
    plan = vps_plan.plan_up(config, with_key(container=RUNNING, given_keys=PUBLIC))
    assert argvs(plan) == [("docker", "exec", "opskit-vps", "vps-ready", str(READY_TIMEOUT_S))]


def test_a_running_vps_without_this_key_gets_it(config):
    plan = vps_plan.plan_up(config, with_key(container=RUNNING, given_keys="ssh-ed25519 AAAAother someone\n"))
    assert [a[:2] for a in argvs(plan)] == [("docker", "cp"), ("docker", "exec"), ("docker", "exec")]
    assert argvs(plan)[1][-1] == "vps-authorize"


@pytest.mark.parametrize("state", ["running", "exited", "paused"])
def test_a_vps_provisioned_for_another_key_is_refused_naming_the_fix_before_it_is_started(config, state):
    with pytest.raises(VpsError, match="provisioned for another key than this checkout's .*`invoke vps.down`"):
        vps_plan.plan_up(config, with_key(container=replace(RUNNING, state=state),
                                          given_keys="ssh-ed25519 AAAAother x\n", provisioned="deploy"))


def test_a_stopped_vps_provisioned_for_this_key_is_started_as_it_is(config):
    stopped = replace(RUNNING, state="exited")
    plan = vps_plan.plan_up(config, with_key(container=stopped, given_keys=PUBLIC, provisioned="deploy"))
    assert [a[:2] for a in argvs(plan)] == [("docker", "start"), ("docker", "exec")]


def test_a_stopped_vps_is_started(config):
    stopped = replace(RUNNING, state="exited")
    plan = vps_plan.plan_up(config, with_key(container=stopped))
    assert [a[:2] for a in argvs(plan)] == [("docker", "cp"), ("docker", "start"), ("docker", "exec")]
    assert not any(a[:2] == ("docker", "create") for a in argvs(plan))


@pytest.mark.parametrize("container, message", [
    (replace(RUNNING, ours=False), "opskit did not make it"),
    (replace(RUNNING, ssh_port=2200), "not 2222"),
])
def test_a_container_that_is_not_this_vps_is_left_alone(config, container, message):
    with pytest.raises(VpsError, match=message):
        vps_plan.plan_up(config, with_key(container=container))


def test_pin_writes_the_host_key_read_out_of_band_then_checks_ssh_as_root(config):
    plan = vps_plan.plan_pin(config, with_key(container=RUNNING, host_key=HOST_KEY))
    write, who = list(plan)
    assert isinstance(write, WriteFile) and write.path == str(config.known_hosts)
    assert write.content == b"[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheVps\n"
    assert isinstance(who, Check) and who.on == SERVER and who.expect == "root"


def test_pin_replaces_a_stale_entry_and_keeps_other_hosts(config):
    other = "[127.0.0.1]:2200 ssh-ed25519 AAAAother\n"
    stale = "[127.0.0.1]:2222 ssh-ed25519 AAAAstale\n"
    plan = vps_plan.plan_pin(config, with_key(host_key=HOST_KEY, known_hosts=other + stale))
    assert plan.steps[0].content.decode() == other + "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheVps\n"


def test_pin_writes_nothing_when_the_key_is_pinned_already(config):
    pinned = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyOfTheVps\n"
    plan = vps_plan.plan_pin(config, with_key(host_key=HOST_KEY, known_hosts=pinned))
    assert not any(isinstance(s, WriteFile) for s in plan)


def test_a_provisioned_box_is_pinned_with_no_root_login(config):
    # root is refused there by design: provisioning proves its own logins
    plan = vps_plan.plan_pin(config, with_key(host_key=HOST_KEY), login=None)
    assert not any(isinstance(s, Check) for s in plan)


def test_port_22_is_written_without_brackets(tmp_path):
    config = VpsConfig(ssh_port=22, http_port=8080, https_port=8443, state_dir=tmp_path)
    assert vps_plan.known_hosts_line(config, HOST_KEY).startswith("127.0.0.1 ssh-ed25519 ")


def test_a_host_key_that_is_not_ed25519_is_refused(config):
    with pytest.raises(VpsError, match="ed25519"):
        vps_plan.known_hosts_line(config, "ssh-rsa AAAAB3Nza root@vps")


def test_down_removes_container_volume_and_pin_but_keeps_the_key(config):
    facts = with_key(container=RUNNING, has_volume=True,
                     known_hosts="[127.0.0.1]:2222 ssh-ed25519 AAAAx\n[127.0.0.1]:2200 ssh-ed25519 AAAAy\n")
    plan = vps_plan.plan_down(config, facts)
    assert argvs(plan) == [("docker", "rm", "--force", "--volumes", "opskit-vps"),
                           ("docker", "volume", "rm", "opskit-vps-docker"),
                           ("docker", "network", "rm", "opskit-vps-net")]
    [write] = [s for s in plan if isinstance(s, WriteFile)]
    assert write.content == b"[127.0.0.1]:2200 ssh-ed25519 AAAAy\n"
    assert not any(str(config.key_file) in " ".join(a) for a in argvs(plan))


def test_down_keeps_the_network_while_another_container_uses_it(config):
    facts = with_key(container=RUNNING, network_users=("opskit-vps", "opskit-vps-2"))
    assert ("docker", "network", "rm", "opskit-vps-net") not in argvs(vps_plan.plan_down(config, facts))


def test_down_with_nothing_there_plans_nothing(config):
    assert len(vps_plan.plan_down(config, vps_plan.VpsFacts())) == 0


def test_the_printed_plans_hold_no_private_key(config):
    config.state_dir.mkdir(parents=True)
    marker = "OPENSSH " + "PRIVATE KEY-----"  # in parts: no private-key header in the repository's text
    config.key_file.write_text(f"-----BEGIN {marker}\nc2VjcmV0\n-----END {marker}\n")
    facts = with_key(host_key=HOST_KEY)
    text = "\n".join(p.render() for p in (vps_plan.plan_up(config, facts), vps_plan.plan_pin(config, facts),
                                          vps_plan.plan_up(config, vps_plan.VpsFacts())))
    assert "PRIVATE KEY" not in text and "c2VjcmV0" not in text


@pytest.mark.parametrize("changes, message", [
    ({"http_port": 2222}, "also ssh_port"),
    ({"ssh_port": 0}, "not a port number"),
    ({"extra_ports": {80: 5432}}, "also http_port"),
    ({"container": "bad name"}, "not a valid container name"),
])
def test_bad_settings_are_named(tmp_path, changes, message):
    with pytest.raises(VpsError, match=message):
        VpsConfig(state_dir=tmp_path, **changes)


def test_defaults_match_the_brief():
    config = VpsConfig()
    assert (config.container, config.ssh_port, config.http_port, config.https_port, config.user) == \
        ("opskit-vps", 2222, 80, 443, "deploy")
    assert config.state_dir.parts[-2:] == (".opskit", "local")
    assert config.known_hosts.name == "known_hosts" and config.key_file.name == "id_ed25519"


def test_config_from_the_local_environment(make_env):
    env = make_env("local")
    config = VpsConfig.from_environment(env)
    assert (config.container, config.ssh_port, config.user) == ("opskit-vps", env.ssh.port, "deploy")
    assert config.key_file == Path(env.ssh.key_file) and config.known_hosts == Path(env.ssh.known_hosts)
    with pytest.raises(VpsError, match="no `vps:`"):
        VpsConfig.from_environment(make_env("production"))


# -- up builds missing kit images first, as steps of its own plan ------------------------------------

BUILD_VPS = Run("build opskit/vps:bookworm (missing)", ["docker", "build", "--tag", IMAGE, "images/vps"])


@pytest.fixture
def vps_missing(monkeypatch):
    """A machine whose kit lacks only the VPS image, and no VPS yet (no engine asked)."""
    decisions = [kit_plan.Decision(i, "d", i.tag == IMAGE, "missing" if i.tag == IMAGE else "up to date")
                 for i in kit_plan.KIT]
    monkeypatch.setattr(kit, "prepare", lambda: (decisions, Plan("kit.build", [BUILD_VPS])))
    monkeypatch.setattr(vps, "gather", lambda config: vps_plan.VpsFacts())


def test_up_says_which_kit_images_it_builds_and_why_and_its_dry_run_shows_the_steps(config, vps_missing):
    out = io.StringIO()
    assert vps.up(config, dry_run=True, out=out) is None
    text = out.getvalue()
    assert f"kit: 1 of {len(kit_plan.KIT)} images to build:\n  opskit/vps:bookworm: missing" in text
    plan = text[text.index("plan vps.up"):]
    assert plan.index("build opskit/vps:bookworm (missing)") < plan.index("create opskit-vps from")


def test_a_failed_kit_step_of_up_is_named_as_it_is_not_as_a_vps_failure(config, vps_missing, monkeypatch):
    failing = replace(BUILD_VPS, argv=("false",))
    monkeypatch.setattr(kit, "prepare", lambda: ([], Plan("kit.build", [failing])))
    with pytest.raises(StepFailed) as failed:
        vps.up(config, out=io.StringIO())
    assert failed.value.step == failing and not isinstance(failed.value, VpsError)
