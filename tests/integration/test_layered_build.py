"""The sample API built as a dependency image plus code layers, on the real engine: a code-only
change reuses the dependency image (its name is the digest of what it reads) and adds new code
layers only; a changed requirements file names, and builds, a new dependency image."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from opskit import ROOT, images
from opskit.runner import Runner
from opskit.steps import Plan

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.usefixtures("docker_engine", "kit_images")]


@pytest.fixture
def api(make_env, tmp_path):
    context = tmp_path / "api"
    shutil.copytree(ROOT / "tests/fixtures/app/api", context, ignore=shutil.ignore_patterns("__pycache__"))
    # a repository of its own: a deploy's prune of jobagent/api (the e2e tier's) never meets these images
    env = make_env("local", edit=lambda raw: raw["defaults"]["builds"]["api"].update(
        context=str(context), repository="opskit-test/layered-api"))
    made = []
    yield env, context, made
    subprocess.run(["docker", "image", "rm", "-f", *made], capture_output=True)


def _build(env, tag: str, made: list) -> tuple[images.Layered, list]:
    """Plan and run the build of the API as `deploy` does; the image's layers (diff ids)."""
    build = env.builds["api"]
    layered = images.dependency_parts(env)["api"]
    assert isinstance(layered, images.Layered), layered
    image = f"{build.repository}:layered-test-{tag}"
    have = images.local_images([layered.image])
    steps = []
    if layered.image not in have:
        steps.append(images.dependency_step(build, layered))
    steps += [images.build_step(build, image, f"digest-{tag}", "rev", "rel", False, layered),
              images.check_step(build, image), images.promote_step(build, image, "rev", "rel")]
    runner = Runner()
    runner.run(Plan("build", steps))
    made += [image, f"{build.repository}:rev", f"{build.repository}:release-rel"]  # the dependency image stays: a deploy of the same inputs reuses it
    return layered, [r.step.title for r in runner.results], images.local_images([image])[image].layers


def test_a_code_change_adds_code_layers_on_the_same_dependency_image(api):
    env, context, made = api
    first, _, layers_1 = _build(env, "one", made)
    deps_layers = images.local_images([first.image])[first.image].layers
    assert layers_1[:len(deps_layers)] == deps_layers  # the venv, users and all: the dependency image's

    (context / "app" / "main.py").write_text((context / "app" / "main.py").read_text() + "\n# a code-only change\n")
    second, titles, layers_2 = _build(env, "two", made)
    assert second.image == first.image and not any("dependency image" in t for t in titles), titles
    assert layers_2[:len(deps_layers)] == deps_layers
    # what is new is the code part's three COPY layers (each made again, with no cache), no more
    assert len(layers_2) == len(layers_1) == len(deps_layers) + 3
    assert [layer for layer in layers_2 if layer not in layers_1] == list(layers_2[len(deps_layers):])

    (context / "requirements.txt").write_text((context / "requirements.txt").read_text() + "# pinned again\n")
    third = images.dependency_parts(env)["api"]
    assert third.image != first.image  # a new dependency image, built with no cache when deployed
