"""Recovery is decided from the phase a failed step reached, never from step titles."""

from __future__ import annotations

import dataclasses

import pytest

from opskit import deploy
from opskit.errors import ConnectionLost, DeployRefused, StepFailed
from opskit.facts import Lock, ServerFacts
from opskit.steps import Beside, Phase, Plan, ShipImage

FACTS = ServerFacts(docker="26.1.5", compose="2.26.1", disk_free_mb=50_000, current="prev", releases=("prev",),
                    now=1_000_000.0)


class FailingRunner:
    """Fails the first plan at step `fail_at` and records every plan it is given after that."""

    dry_run = False

    def __init__(self, fail_at: int):
        self.fail_at, self.plans, self.results, self.bytes_shipped = fail_at, [], [], 0
        self.reached = Phase.NONE

    def say(self, text: str) -> None:
        pass

    def quietly(self, step):  # the lock's lease, renewed in the background
        return None

    def run(self, plan: Plan):
        self.plans.append(plan)
        if len(self.plans) == 1:
            failed = list(plan)[self.fail_at]
            self.reached = max(s.phase for s in could_have_started(plan, failed))
            raise StepFailed(failed, 1, "boom")
        return []


def could_have_started(plan: Plan, failed) -> list:
    """The steps before `failed` and, when it runs beside others, every step of its `Beside`."""
    out = []
    for step in plan.steps:
        inner = step.leaves() if isinstance(step, Beside) else [step]
        out += inner
        if failed in inner:
            return out
    raise AssertionError(f"{failed.title} is not in the plan")


def reworded(plan_deploy):
    """plan_deploy, but every step gets a meaningless title."""
    def plan(*args, **kwargs):
        original, count = plan_deploy(*args, **kwargs), iter(range(1000))

        def retitled(step):
            if isinstance(step, Beside):
                return Beside("side by side", tuple(tuple(map(retitled, branch)) for branch in step.branches))
            return dataclasses.replace(step, title=f"step {next(count)}")
        return Plan(original.name, [retitled(s) for s in original.steps])
    return plan


def recovery_after_failure_at(env, release, monkeypatch, index: int, facts=FACTS) -> tuple:
    monkeypatch.setattr(deploy, "gather", lambda env, connection: facts)
    monkeypatch.setattr(deploy.images, "local_images", lambda refs: {})
    runner = FailingRunner(index)
    with pytest.raises(StepFailed):
        deploy.deploy(env, release, None, runner, deploy.Options(), "abc123")
    return runner.reached, [(type(s).__name__, getattr(s, "argv", None)) for p in runner.plans[1:] for s in p]


def test_every_deploy_step_has_a_phase_and_phases_only_move_forward(env, release):
    plan = deploy.plan_deploy(env, release, FACTS, {}, "abc123", deploy.Options())
    phases = [s.phase for s in plan]
    assert Phase.NONE not in phases
    assert phases == sorted(phases)
    assert set(phases) == set(Phase) - {Phase.NONE}


def test_rewording_every_title_leaves_every_recovery_the_same(env, release, monkeypatch):
    steps = len(deploy.plan_deploy(env, release, FACTS, {}, "abc123", deploy.Options()))
    plain = [recovery_after_failure_at(env, release, monkeypatch, i) for i in range(steps)]
    monkeypatch.setattr(deploy, "plan_deploy", reworded(deploy.plan_deploy))
    assert [recovery_after_failure_at(env, release, monkeypatch, i) for i in range(steps)] == plain


@pytest.mark.parametrize("stores_there", [False, True], ids=["stores-shipped-first", "ship-beside-the-stores"])
def test_recovery_from_each_phase(env, release, monkeypatch, stores_there):
    """`phase` is the furthest a step may have reached when the failure came (steps beside the
    failed one too): the previous release is started again whenever a CONFIG step may have run."""
    facts = dataclasses.replace(FACTS, images=frozenset(deploy.stores_images(release))) if stores_there else FACTS
    plan = deploy.plan_deploy(env, release, facts, {}, "abc123", deploy.Options())
    assert any(isinstance(s, Beside) for s in plan.steps) == stores_there
    lock = deploy.release_lock(deploy.Layout(env.remote_dir)).argv
    for i, step in enumerate(plan):
        phase, recovery = recovery_after_failure_at(env, release, monkeypatch, i, facts)
        argvs = [argv for _, argv in recovery]
        if phase <= Phase.LOCK:  # the lock is not ours (or not taken): nothing to undo
            assert recovery == [], (i, step.title)
            continue
        assert argvs[-1] == lock, (i, step.title)  # the lock is always given back, last
        restarts_previous = any(" up -d " in " ".join(argv or ()) and "/releases/prev/" in " ".join(argv or ())
                                for argv in argvs)
        assert restarts_previous == (phase >= Phase.CONFIG), (i, step.title, phase)
        assert any(f"/releases/{release.id}" in " ".join(argv or ()) and argv[:2] == ("rm", "-rf")
                   for argv in argvs), (i, step.title)  # the unfinished release goes
        if isinstance(step, ShipImage) and stores_there:  # the stores may have started beside the ship
            assert restarts_previous, step.title


def test_a_failed_rollback_gives_the_lock_back_only_once_it_holds_it(env, monkeypatch):
    facts = dataclasses.replace(FACTS, releases=("older", "prev"))
    monkeypatch.setattr(deploy, "gather", lambda env, connection: facts)
    for fail_at, unlocks in ((0, False), (1, True), (3, True)):
        runner = FailingRunner(fail_at)
        with pytest.raises(StepFailed):
            deploy.rollback(env, None, runner)
        assert (len(runner.plans) == 2) == unlocks, fail_at


def test_losing_the_race_for_the_lock_is_a_refusal_naming_the_winner(env, release, monkeypatch):
    monkeypatch.setattr(deploy, "gather", lambda env, connection: FACTS)
    monkeypatch.setattr(deploy.images, "local_images", lambda refs: {})
    winner = '{"deploy_id": "0123456789abcdef0123", "holder": "ci@runner", "release": "r9", "since": 1000}'

    class LoserRunner(FailingRunner):
        def run(self, plan):
            self.plans.append(plan)
            if len(self.plans) == 1:
                take = next(s for s in plan if s.phase == Phase.LOCK)
                raise StepFailed(take, deploy.LOCK_HELD, f"deploy lock held by: {winner}")
            return []

    runner = LoserRunner(0)
    with pytest.raises(DeployRefused) as info:
        deploy.deploy(env, release, None, runner, deploy.Options(), "abc123")
    assert info.value.exit_code == 5 and "ci@runner (deploy 0123456789ab)" in str(info.value)
    assert len(runner.plans) == 1  # the lock is not ours: nothing to recover


def test_a_lost_link_recovers_over_a_new_connection_when_the_lock_is_still_ours(env, release, monkeypatch):
    options = deploy.Options()
    mine = dataclasses.replace(FACTS, lock=Lock("me", 0.0, release.id, options.deploy_id, 0.0))
    seen = iter([FACTS, mine])
    monkeypatch.setattr(deploy, "gather", lambda env, connection: next(seen))
    monkeypatch.setattr(deploy.images, "local_images", lambda refs: {})

    class Link:
        reconnected = 0

        def reconnect(self):
            self.reconnected += 1

    class CutRunner(FailingRunner):
        def run(self, plan):
            self.plans.append(plan)
            if len(self.plans) == 1:
                ship = next(s for s in plan if s.phase == Phase.SHIP)
                raise ConnectionLost("127.0.0.1: the connection was lost during step `ship`", ship)
            return []

    runner, link = CutRunner(0), Link()
    with pytest.raises(ConnectionLost) as info:
        deploy.deploy(env, release, link, runner, options, "abc123")
    assert link.reconnected == 1 and info.value.exit_code == 4
    assert "reconnected and recovered" in str(info.value)
    [recovery] = runner.plans[1:]
    assert recovery.steps[-1].argv == deploy.release_lock(deploy.Layout(env.remote_dir)).argv
