"""The deploy's image prune on a real engine: this project's images that no kept release names
go; images of other repositories, those a kept release names and those a container uses stay;
a kept release whose compose file cannot be read keeps everything."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from opskit import prune
from opskit.layout import Layout
from opskit.runner import Runner
from opskit.steps import LOCAL, Plan

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine", "kit_images")]

SOURCE = "opskit/base:bookworm"  # any image of the kit, with a label of its own per tag
OURS, OTHER = "opskit-prunetest/app", "opskit-prunetest-other/app"


def _docker(*argv, check=True):
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=check)


def _tags(repo: str) -> set:
    out = _docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repo).stdout.split()
    return set(out)


@pytest.fixture
def server(make_env, tmp_path):
    """Releases r1..r3 on a 'server' folder here; tags a..d of our repository, one of another."""
    env = make_env("local", edit=lambda raw: [raw["defaults"]["builds"][b].update(repository=OURS)
                                              for b in ("api", "frontend")])
    layout = Layout(str(tmp_path / "srv"))
    for release, tag in (("r1", "a"), ("r2", "b"), ("r3", "c")):
        folder = tmp_path / "srv" / "releases" / release
        folder.mkdir(parents=True)
        # r2 as our render writes it (a quoted ref), the others plain
        ref = f'"{OURS}:{tag}"' if release == "r2" else f"{OURS}:{tag}"
        (folder / "docker-compose.yml").write_text(f"services:\n  app:\n    image: {ref}\n")
    for ref in [f"{OURS}:{tag}" for tag in "abcde"] + [f"{OTHER}:1"]:  # distinct images, as releases make
        subprocess.run(["docker", "build", "--quiet", "--tag", ref, "-"], input=f"FROM {SOURCE}\nLABEL t={ref}\n",
                       capture_output=True, text=True, check=True)
    yield env, layout
    _docker("rm", "-f", "opskit-prunetest-user", check=False)
    _docker("image", "rm", *sorted(_tags(OURS) | _tags(OTHER)), check=False)


def _prune(env, layout, kept):
    step = dataclasses.replace(prune.server_images(env, layout, kept), on=LOCAL)
    runner = Runner()
    runner.run(Plan("prune", [step]))
    return runner.results[-1].output


def test_only_our_images_that_no_kept_release_names_go_and_one_in_use_stays(server):
    env, layout = server
    _docker("create", "--name", "opskit-prunetest-user", f"{OURS}:e", "true")
    said = _prune(env, layout, ["r3", "r2"])
    assert _tags(OURS) == {f"{OURS}:b", f"{OURS}:c", f"{OURS}:e"}, said  # a, d gone; e runs a container
    assert _tags(OTHER) == {f"{OTHER}:1"}  # another repository is never touched
    assert f"kept {OURS}:e: in use" in said and "removed 2 image(s)" in said


def test_a_kept_release_that_cannot_be_read_keeps_every_image(server, tmp_path):
    env, layout = server
    (tmp_path / "srv" / "releases" / "r2" / "docker-compose.yml").write_text("services: [broken\n")
    said = _prune(env, layout, ["r3", "r2"])
    assert "no image removed" in said
    assert {f"{OURS}:{t}" for t in "abcde"} <= _tags(OURS)
