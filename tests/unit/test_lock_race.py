"""The deploy lock is exclusive under a real race: the lock step's own shell script, run here in a
temporary folder by several processes released at the same instant. Exactly one wins; every other
exits 75 naming the holder. (A lock step that is not atomic, such as `mkdir -p` for `mkdir` or `mv`
for `mv -T`, lets them all "win".)"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from opskit import deploy
from opskit.layout import Layout
from opskit.steps import SERVER

LOCK_HELD = 75  # EX_TEMPFAIL: the exit code a deploy that finds the lock taken gives


def lock_argv(root, holder: str, release: str = "r1", breaking: bool = False) -> list[str]:
    step = deploy.acquire_lock(Layout(str(root)), release, deploy.Options(holder=holder), breaking)
    assert step.on == SERVER and list(step.argv[:2]) == ["sh", "-c"]
    return list(step.argv)


def race(tmp_path, argvs: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Start every argv, each waiting on one barrier file, then let them all go at once."""
    go = tmp_path / f"go-{time.monotonic_ns()}"
    procs = [subprocess.Popen(["sh", "-c", 'while [ ! -e "$0" ]; do :; done; exec "$@"', str(go), *argv],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for argv in argvs]
    time.sleep(0.2)  # every shell is spinning on the barrier
    go.touch()
    results = []
    for argv, proc in zip(argvs, procs):
        out, err = proc.communicate(timeout=30)
        results.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    return results


@pytest.mark.parametrize("contenders", [2, 4])
def test_of_deploys_racing_for_the_lock_exactly_one_wins(tmp_path, contenders):
    for round_ in range(10):
        root = tmp_path / f"round{round_}"
        root.mkdir()
        holders = [f"deployer{i}@host" for i in range(contenders)]
        results = race(tmp_path, [lock_argv(root, h, release=f"rel{i}") for i, h in enumerate(holders)])
        codes = [r.returncode for r in results]
        assert sorted(codes) == [0] + [LOCK_HELD] * (contenders - 1), (codes, [r.stderr for r in results])
        winner = holders[codes.index(0)]
        info = json.loads(Path(Layout(str(root)).lock_info).read_text())
        assert info["holder"] == winner and info["release"] == f"rel{codes.index(0)}"
        for result in results:  # the lock appears whole (info inside), so a loser can always name the winner
            if result.returncode == LOCK_HELD:
                assert result.stderr.startswith("deploy lock held by: ") and winner in result.stderr


def test_a_held_lock_refuses_the_next_deploy_until_it_is_released(tmp_path):
    first = subprocess.run(lock_argv(tmp_path, "a@host"), capture_output=True, text=True)
    assert first.returncode == 0 and (tmp_path / "releases").is_dir()
    second = subprocess.run(lock_argv(tmp_path, "b@host"), capture_output=True, text=True)
    assert second.returncode == LOCK_HELD and '"holder": "a@host"' in second.stderr
    assert json.loads(Path(Layout(str(tmp_path)).lock_info).read_text())["holder"] == "a@host"  # untouched

    release = deploy.release_lock(Layout(str(tmp_path)))
    subprocess.run(list(release.argv), check=True)
    assert subprocess.run(lock_argv(tmp_path, "b@host"), capture_output=True).returncode == 0


def test_breaking_a_stale_lock_takes_it(tmp_path):
    assert subprocess.run(lock_argv(tmp_path, "gone@host"), capture_output=True).returncode == 0
    broke = subprocess.run(lock_argv(tmp_path, "new@host", breaking=True), capture_output=True, text=True)
    assert broke.returncode == 0, broke.stderr
    assert json.loads(Path(Layout(str(tmp_path)).lock_info).read_text())["holder"] == "new@host"
