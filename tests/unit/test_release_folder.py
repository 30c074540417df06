"""`invoke render --out`: nothing is destroyed that opskit did not create, and a release folder is
written whole or not at all."""

from __future__ import annotations

import stat

import pytest

from opskit import release_folder
from opskit.errors import EXIT_BAD_INPUT, UsageError
from tests.unit.test_tasks import invoke


@pytest.fixture
def work(tmp_path):
    """A folder of this test's own (tmp_path also holds the environment's build contexts)."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def listing(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_folder_gets_the_release_whole_with_its_marker_and_modes(release, work):
    out = release_folder.write(release, work / "new" / "release")
    assert release_folder.read(out) == {p: f.content for p, f in release.files.items()}
    assert (out / release_folder.MARKER).is_file()
    assert all(stat.S_IMODE((out / p).stat().st_mode) == f.mode for p, f in release.files.items())
    assert stat.S_IMODE((out / "secrets").stat().st_mode) == 0o700  # its files are 0444: it guards them
    assert sorted(p.name for p in out.parent.iterdir()) == ["release"]  # no staging left beside it


def test_an_earlier_release_folder_is_replaced_stale_files_and_all(release, work):
    out = release_folder.write(release, work / "release")
    (out / "env").mkdir()
    (out / "env" / "stale.env").write_text("OLD=1\n")
    release_folder.write(release, out)
    assert not (out / "env").exists()
    assert sorted(p.name for p in work.iterdir()) == ["release"]


def test_an_empty_folder_may_receive_a_release(release, work):
    (work / "empty").mkdir()
    assert (release_folder.write(release, work / "empty") / "docker-compose.yml").is_file()


@pytest.mark.parametrize("setup", ["user_folder", "file", "link"])
def test_a_folder_opskit_did_not_make_a_file_or_a_link_is_refused_and_left_as_it_was(release, work, setup):
    target = work / "target"
    if setup == "user_folder":
        (target / "notes").mkdir(parents=True)
        (target / "notes" / "todo.txt").write_text("mine\n")
        (target / "docker-compose.yml").write_text("mine too\n")
    elif setup == "file":
        target.write_text("a file of mine\n")
    else:
        (work / "elsewhere").mkdir()
        target.symlink_to(work / "elsewhere")
    before = listing(work)
    with pytest.raises(UsageError) as info:
        release_folder.write(release, target)
    assert info.value.exit_code == EXIT_BAD_INPUT and str(target) in str(info.value)
    assert listing(work) == before
    assert sorted(p.name for p in work.iterdir()) == sorted(["target"] + (["elsewhere"] if setup == "link" else []))


def test_render_into_a_users_folder_exits_2_and_keeps_every_file(tmp_path, secrets_env):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    done = invoke("render", "-e", "production", "--out", str(mine), env=secrets_env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "did not write" in done.stderr
    assert listing(mine) == {"thesis.tex": b"years of work\n"}
