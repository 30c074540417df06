"""The Prisma guard on real images: tiny ones built here (on a local base image, or FROM scratch:
the guard executes nothing inside the image, it reads its config and files), and the sample
frontend built from its Dockerfile on the kit's opskit/node:18 (built first when missing)."""

from __future__ import annotations

import io
import json
import os
import subprocess

import pytest

from opskit import ROOT
from opskit.errors import GuardError, StepFailed
from opskit.prisma import CONTAINER_LABEL, check_image, guard_step
from opskit.runner import Runner
from opskit.steps import Plan

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

FRONTEND = ROOT / "tests/fixtures/app/frontend"
SAMPLE_CMD = '["node", "server.js"]'  # the sample Dockerfile's CMD (tests/unit checks it is)
LOCAL_BASES = ("opskit/node:18", "opskit/base:bookworm")


def docker(*argv, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=900)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(argv[:3])} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def has_image(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


@pytest.fixture(scope="module")
def base() -> str:
    """A base image this machine already has; FROM scratch works too (nothing is run)."""
    return next((ref for ref in LOCAL_BASES if has_image(ref)), "scratch")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """build(name, dockerfile, files) -> tag; every image built here is removed at the end."""
    tags = []

    def make(name: str, dockerfile: str, files: dict, args=()) -> str:
        context = tmp_path_factory.mktemp(name)
        (context / "Dockerfile").write_text(dockerfile)
        for rel, text in files.items():
            (context / rel).write_text(text)
            if text.startswith("#!"):
                (context / rel).chmod(0o755)
        tag = f"opskit-test/prisma-guard-{name}:{os.getpid()}"
        tags.append(tag)
        docker("build", "--quiet", "--tag", tag, *args, str(context))
        return tag

    yield make
    if tags:
        docker("image", "rm", "--force", *tags, check=False)


def run_guard_step(image: str, command=None):
    """The plan step the deploy inserts after the frontend build, run by the real runner."""
    Runner(None, out=io.StringIO()).run(Plan("guard", [guard_step(image, command)]))


def no_container_left() -> bool:
    return docker("ps", "--all", "--quiet", "--filter", f"label={CONTAINER_LABEL}").stdout.strip() == ""


def test_an_image_whose_start_script_runs_prisma_migrate_deploy_is_refused(base, build):
    package = {"name": "bad", "scripts": {"start": "prisma migrate deploy && node server.js"}}
    image = build("migrates", f'FROM {base}\nWORKDIR /app\nCOPY package.json ./\nCMD ["npm", "start"]\n',
                  {"package.json": json.dumps(package)})
    found = check_image(image)
    assert [v.command for v in found] == ["prisma migrate deploy"]
    assert found[0].origin == "CMD `npm start`"
    with pytest.raises(StepFailed) as failed:
        run_guard_step(image)
    assert "refused" in failed.value.output and "Alembic (SQLAlchemy) owns the schema" in failed.value.output
    assert no_container_left()


def test_an_image_like_the_sample_frontend_is_accepted(base, build):
    image = build("like-sample", f"FROM {base}\nWORKDIR /app\nCOPY package.json ./\nCMD {SAMPLE_CMD}\n",
                  {"package.json": (FRONTEND / "package.json").read_text()})
    assert check_image(image, healthcheck=["node", "healthcheck.js"]) == []
    run_guard_step(image)
    # ... but not with a compose command that pushes the schema at start
    found = check_image(image, command=["sh", "-c", "npx prisma db push && node server.js"])
    assert [v.command for v in found] == ["prisma db push"] and found[0].origin.startswith("compose command")
    assert no_container_left()


def test_an_entrypoint_script_that_migrates_is_read_from_the_image_and_refused(base, build):
    entry = "#!/bin/sh\nset -e\n./node_modules/.bin/prisma migrate deploy\nexec \"$@\"\n"
    image = build("entrypoint", f"FROM {base}\nWORKDIR /app\nCOPY package.json ./\n"
                                "COPY entry.sh /usr/local/bin/entry.sh\n"
                                f'ENTRYPOINT ["entry.sh"]\nCMD {SAMPLE_CMD}\n',
                  {"package.json": (FRONTEND / "package.json").read_text(), "entry.sh": entry})
    found = check_image(image)
    assert [(v.chain, v.command) for v in found] == [(("script file entry.sh",), "prisma migrate deploy")]


def test_an_image_without_package_json_that_runs_npm_start_is_refused(base, build):
    image = build("no-package", f'FROM {base}\nWORKDIR /srv\nCMD ["npm", "start"]\n', {})
    found = check_image(image)
    assert len(found) == 1 and "no package.json was found" in found[0].reason


def test_a_missing_image_is_an_error_that_says_so():
    with pytest.raises(GuardError, match="cannot inspect image opskit-test/prisma-guard-missing:0.*build it first"):
        check_image("opskit-test/prisma-guard-missing:0")


@pytest.mark.slow
def test_the_sample_frontend_built_from_its_dockerfile_is_accepted(kit_images):
    # kit_images builds opskit/node:18 when it is missing (tests/conftest.py): this test never skips
    tag = f"opskit-test/prisma-guard-sample:{os.getpid()}"
    docker("build", "--quiet", "--build-arg", "NODE_IMAGE=opskit/node:18", "--tag", tag, str(FRONTEND))
    try:
        assert check_image(tag, healthcheck=["node", "healthcheck.js"]) == []
        run_guard_step(tag)
    finally:
        docker("image", "rm", "--force", tag, check=False)
    assert no_container_left()
