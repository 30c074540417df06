"""The start-first script, run by a real `sh` against a fake `docker` that records what it was
asked and answers from a scripted state (the real engine runs it in the e2e tier)."""

from __future__ import annotations

import os
import subprocess

import pytest

from opskit import rollout, smoke

from .fakes import fake_programs

FAKE_DOCKER = r"""#!/bin/sh
# argv to the log; answers from $STATE: want (the new config hash), running, all, hash_<id> (its
# config hash, or for the new one n1 its health), up_fails
echo "$*" >> "$STATE/log"
case "$*" in
  *"config --hash"*) echo "api $(cat "$STATE/want")";;
  *"ps -q"*"status=exited"*) cat "$STATE/dead" 2>/dev/null;;
  *"ps -q"*" -a"*) cat "$STATE/all";;
  *"ps -q"*) cat "$STATE/running";;
  "inspect -f"*) cat "$STATE/hash_$4";;
  *" up -d "*) echo n1 >> "$STATE/all"; echo n1 >> "$STATE/running"; [ -f "$STATE/up_fails" ] && exit 1;;
  "logs"*) echo "the new container's log line";;
esac
exit 0
"""


@pytest.fixture
def docker(tmp_path):
    path = fake_programs(tmp_path / "bin", docker=FAKE_DOCKER)
    state = tmp_path / "state"
    state.mkdir()

    def run(want, running, hashes, up_fails=False, dead=(), overlap=False):
        (state / "want").write_text(want)
        (state / "running").write_text("".join(f"{cid}\n" for cid in running))
        (state / "all").write_text("\n".join([*running, *dead]) + "\n")
        (state / "dead").write_text("\n".join(dead))
        for cid, value in hashes.items():
            (state / f"hash_{cid}").write_text(value)
        if up_fails:
            (state / "up_fails").write_text("")
        env = {**os.environ, "PATH": path, "STATE": str(state)}
        done = subprocess.run(["sh", "-c", rollout.script("/srv/r/1", "jobagent", "api", overlap)], env=env,
                              capture_output=True, text=True)
        log = (state / "log").read_text().splitlines()
        return done, log
    return run


def test_a_container_of_the_old_config_stops_only_after_the_new_one_is_up_and_healthy(docker):
    done, log = docker("new", ["o1"], {"o1": "old"})
    assert done.returncode == 0, done.stderr
    up = next(i for i, line in enumerate(log) if " up -d " in line)
    assert "--no-recreate --scale api=2 --wait" in log[up]
    assert log[up + 1:] == ["stop o1", "rm o1"]
    assert "stopping the old one gracefully" in done.stdout


@pytest.mark.parametrize("state", ["healthy", "running"])  # running: a container with no healthcheck
def test_overlapped_the_old_container_stops_as_the_new_one_starts_and_goes_once_it_is_healthy(docker, state):
    done, log = docker("new", ["o1"], {"o1": "old", "n1": state}, overlap=True)
    assert done.returncode == 0, done.stderr
    up = next(i for i, line in enumerate(log) if " up -d " in line)
    assert "--no-recreate --scale api=2 api" in log[up] and "--wait" not in log[up], log[up]
    assert "stop o1" in log[up + 1:] and log[-1] == "rm o1", log
    assert any("State.Health" in line and line.endswith(" n1") for line in log), log
    assert "the new container is healthy, the old one stopped" in done.stdout


@pytest.mark.parametrize("state", ["unhealthy", "exited"])
def test_overlapped_a_new_container_that_fails_is_removed_and_the_whole_up_is_due(docker, state):
    done, log = docker("new", ["o1"], {"o1": "old", "n1": state}, overlap=True)
    assert done.returncode == rollout.FALL_BACK, done.stderr
    assert "rm -f n1" in log and "stop o1" in log and "rm o1" not in log, log
    assert f"the new container is {state}; it is removed" in done.stderr


def test_nothing_is_touched_when_the_running_container_has_the_new_config(docker):
    done, log = docker("same", ["o1"], {"o1": "same"})
    assert done.returncode == 0 and "already runs this release" in done.stdout
    assert not any(" up " in line or line.startswith(("stop", "rm")) for line in log), log


def test_with_none_running_the_service_is_started_on_its_own(docker):
    done, log = docker("new", [], {})
    assert done.returncode == 0 and "none running; starting it" in done.stdout
    [up] = [line for line in log if " up " in line]
    assert up.endswith("up -d --wait --wait-timeout 300 api") and "--scale" not in up, up


def test_the_others_are_every_service_but_those_replaced_start_first_or_on_their_own(env):
    others = rollout.the_others(env)
    assert not {"api", "frontend", "worker", "beat"} & set(others)
    assert set(others) | {"api", "frontend", "worker", "beat"} == set(smoke.expected_services(env))


def test_a_new_container_that_never_gets_healthy_is_removed_and_the_old_one_left_serving(docker):
    done, log = docker("new", ["o1"], {"o1": "old"}, up_fails=True)
    assert done.returncode == rollout.FALL_BACK
    assert "rm -f n1" in log and "stop o1" not in log and "rm o1" not in log, log
    assert "it is removed" in done.stderr and "the new container's log line" in done.stderr


def test_a_stopped_container_of_the_service_is_removed_before_the_scale_up(docker):
    done, log = docker("new", ["o1"], {"o1": "old"}, dead=["x9"])
    assert done.returncode == 0, done.stderr
    assert log.index("rm -f x9") < next(i for i, line in enumerate(log) if " up -d " in line)


def test_no_up_drops_the_services_dependencies_from_its_config(env):
    # --no-deps makes a container whose config hash is not the release's: the next `up` recreates it
    assert "--no-deps" not in rollout.script("/srv/r/1", "jobagent", "api")
    assert "--no-deps" not in rollout.replace_step(env, "/srv/r/1").argv[-1]


# -- the replacement as a whole: its jobs side by side --------------------------------------------

FAKE_COMPOSE_DOCKER = r"""#!/bin/sh
# for the whole replacement: each job's service, with a start and an end in $STATE/log
case "$*" in
  *" config") printf '%s\n' "name: $PROJECT" services:
      for svc in $SERVICES; do printf '%s\n' "  $svc:" "    networks:" "      web: null"; done
      printf '%s\n' networks: "  db:" "    name: ${PROJECT}_db" "    internal: true" "  web:" "    name: ${PROJECT}_web" \
      volumes: "  pgdata:" "    name: ${PROJECT}_pgdata";;
  "network inspect "*) [ -f "$STATE/net_$3" ] || exit 1;;
  *"config --hash"*) echo "x $(cat "$STATE/want")";;
  *"ps -q"*"status=exited"*) ;;
  *"ps -q"*" -a"*) echo o1; echo n1;;
  *"ps -q"*) echo o1; svc=${*##*service=}; svc=${svc%% *}; [ ! -f "$STATE/up_$svc" ] || echo n1;;
  "inspect -f"*"State.Health"*) echo healthy;;
  "inspect -f"*) echo old;;
  *" up -d "*)
    what=$(echo "$*" | sed 's/.*--wait-timeout [0-9]* //; s/.*--no-recreate --scale [a-z]*=[0-9]* //')
    case "$*" in *"--scale "*) svc=${*##*--scale }; touch "$STATE/up_${svc%%=*}";; esac
    echo "start $what" >> "$STATE/log"; sleep 0.3; echo "end $what" >> "$STATE/log"
    case "$*" in *"$FAIL"*) [ -n "$FAIL" ] && exit 1;; esac
    echo "up of $what";;
esac
exit 0
"""


@pytest.fixture
def replace(tmp_path, env):
    path = fake_programs(tmp_path / "bin", docker=FAKE_COMPOSE_DOCKER)
    state = tmp_path / "state"
    state.mkdir()

    def run(networks=("web", "db"), fail="", services=smoke.expected_services(env)):
        (state / "want").write_text("new")
        (state / "log").write_text("")
        for net in networks:
            (state / f"net_{env.project}_{net}").write_text("")
        done = subprocess.run(["sh", "-c", rollout.replace_script(env, "/srv/r/1")], capture_output=True, text=True,
                              env={**os.environ, "PATH": path, "STATE": str(state), "FAIL": fail,
                                   "PROJECT": env.project, "SERVICES": " ".join(services)})
        return done, (state / "log").read_text().splitlines()
    return run


def test_the_jobs_run_side_by_side_each_line_marked_with_its_job(replace, env):
    done, log = replace()
    assert done.returncode == 0, done.stderr
    starts = [i for i, line in enumerate(log) if line.startswith("start")]
    assert len(starts) == 5 and max(starts) < min(i for i, line in enumerate(log) if line.startswith("end")), log
    assert "[api] api: the new container is healthy beside the old" in done.stdout
    assert "[beat] up of beat" in done.stdout
    assert "[worker] worker: the new container is healthy, the old one stopped" in done.stdout
    assert f"[others] up of --remove-orphans {' '.join(rollout.the_others(env))}" in done.stdout


def test_with_a_network_to_create_the_jobs_run_one_after_another(replace, env):
    done, log = replace(networks=("web",))
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in log] == ["start", "end"] * 5, log
    assert f"new network(s) {env.project}_db: one job after another" in done.stdout


def test_a_failed_job_fails_the_step_after_the_others_finished(replace):
    done, log = replace(fail="beat")
    assert done.returncode == 1 and "failed: beat" in done.stderr
    assert sum(line.startswith("end") for line in log) == 5 and "start --remove-orphans" not in log, log


def test_a_start_first_that_falls_back_brings_the_whole_release_up_once_the_jobs_are_over(replace):
    done, log = replace(fail="--scale api")
    assert done.returncode == 0, done.stderr
    assert log[-2:] == ["start --remove-orphans", "end --remove-orphans"], log
    assert "the new container of api was not healthy beside the old one" in done.stderr


def test_the_jobs_are_those_of_the_services_the_release_has(replace, env):
    """A rollback's release may lack a service of today's inventory, or have one it lacks."""
    older = [name for name in smoke.expected_services(env) if name != "frontend"] + ["mailer"]
    done, log = replace(services=older)
    assert done.returncode == 0, done.stderr
    assert "[frontend]" not in done.stdout and "[api] api: the new container is healthy" in done.stdout
    others = [name for name in older if name not in (*rollout.START_FIRST, *rollout.OVERLAPPED, *rollout.ON_ITS_OWN)]
    assert f"[others] up of --remove-orphans {' '.join(others)}" in done.stdout
    assert len([line for line in log if line.startswith("start")]) == 4, log
