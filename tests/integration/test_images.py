"""Builds with no cache and import checks on the real Docker engine: a broken image never ships."""

from __future__ import annotations

import subprocess

import pytest

from opskit import images
from opskit.errors import StepFailed
from opskit.runner import Runner
from opskit.steps import Plan
pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

IMAGE = "opskit-test/broken-api:1"


@pytest.fixture
def broken_api(make_env, contexts, kit_images):
    """An API image whose requirements were forgotten: it builds, but must not ship."""
    (contexts["api"] / "Dockerfile").write_text(
        "ARG PYTHON_IMAGE\nFROM ${PYTHON_IMAGE}\nRUN python3 -m venv /opt/venv\nENV PATH=/opt/venv/bin:$PATH\n")
    # a repository of its own: the e2e tier's deploys (beside this tier) prune jobagent/api's tags
    build = make_env("local", edit=lambda raw: raw["defaults"]["builds"]["api"].update(
        repository="opskit-test/broken-api")).builds["api"]
    yield build
    subprocess.run(["docker", "image", "rm", "-f", IMAGE, images.unchecked(IMAGE), f"{build.repository}:rev-y",
                    f"{build.repository}:release-release-z", f"{build.repository}:rev",
                    f"{build.repository}:release-release"], capture_output=True)


def test_a_failed_import_check_stops_the_plan_naming_image_check_and_error(broken_api):
    plan = Plan("build", [images.build_step(broken_api, IMAGE, "digest", "rev", "release", pull=False),
                          images.check_step(broken_api, IMAGE)])
    runner = Runner()
    with pytest.raises(StepFailed) as info:
        runner.run(plan)
    assert [r.step.title.split(" image")[0] for r in runner.results] == ["build api"]  # built, then refused
    assert images.local_images([IMAGE]) == {}  # only its unchecked- tag exists: nothing would ship it
    assert info.value.step.title.startswith("import checks of api")
    assert "import check failed: alembic.config:Config: ModuleNotFoundError: No module named 'alembic'" in str(info.value)


def test_the_built_image_carries_its_digest_and_revision(broken_api):
    Runner().run(Plan("build", [images.build_step(broken_api, IMAGE, "digest-x", "rev-y", "release-z", pull=False),
                                images.promote_step(broken_api, IMAGE, "rev-y", "release-z")]))
    labels = images.local_images([IMAGE])[IMAGE].labels
    assert labels[images.LABEL_DIGEST] == "digest-x" and labels[images.LABEL_REVISION] == "rev-y"
