"""The deploy's gates fail in the unit tier too, with no Docker engine: the import checks (their
generated scripts, run by a fake `docker run` that runs the entrypoint here), and the prisma guard's
command line (its exit codes, and its plan step through the real runner)."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import sys
import textwrap

import pytest

from opskit import images
from opskit.errors import GuardError, StepFailed
from opskit.runner import Runner
from opskit.steps import LOCAL, Plan

from .fakes import fake_programs

IMAGE = "registry.example/job-agent-api:digest1"

FAKE_DOCKER = textwrap.dedent(f"""\
    #!{sys.executable}
    # A fake `docker` for the import-check step: `docker run --rm --network none --entrypoint P IMAGE ARGS`
    # runs P ARGS here (python is this interpreter), and refuses a run that could reach the network.
    import os, sys
    args = sys.argv[1:]
    assert args[0] == "run", args
    options, i = {{}}, 1
    while args[i].startswith("--"):
        if args[i] == "--rm":
            options["rm"], i = True, i + 1
        else:
            options[args[i]], i = args[i + 1], i + 2
    image, rest = args[i], args[i + 1:]
    if options.get("--network") != "none" or not options.get("rm"):
        print(f"fake docker: an import check must run with --rm --network none, not {{options}}")
        sys.exit(125)
    if not image.split(":")[-1].startswith("unchecked-"):
        print(f"fake docker: the checks run on the unchecked- tag, not {{image}}")
        sys.exit(125)
    program = {{"python": sys.executable}}.get(options["--entrypoint"], options["--entrypoint"])
    os.execvp(program, [program, *rest])
""")


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_programs(tmp_path / "bin", docker=FAKE_DOCKER))


@pytest.fixture
def build(make_env):
    return make_env("production").builds["api"]


def check(build, language: str, *checks: str) -> Runner:
    step = images.check_step(dataclasses.replace(build, language=language, import_checks=checks), IMAGE)
    assert step.on == LOCAL and step.argv[0] == "docker"
    runner = Runner(out=io.StringIO())
    runner.run(Plan("checks", [step]))
    return runner


# -- the import checks ----------------------------------------------------------------------------


def test_python_import_checks_pass_when_every_module_and_attribute_imports(fake_docker, build):
    output = check(build, "python", "json", "os.path:join", "importlib").results[0].output
    assert output.splitlines() == ["ok json", "ok os.path:join", "ok importlib"]


@pytest.mark.parametrize("checks, error", [
    (("json", "opskit_no_such_module"), "import check failed: opskit_no_such_module: ModuleNotFoundError"),
    (("os.path:no_such_attribute",), "import check failed: os.path:no_such_attribute: AttributeError"),
    (("opskit_no_such_module", "json"), "import check failed: opskit_no_such_module: ModuleNotFoundError"),
])
def test_a_python_import_check_that_fails_fails_the_step(fake_docker, build, checks, error):
    with pytest.raises(StepFailed) as info:
        check(build, "python", *checks)
    assert info.value.returncode == 1 and error in str(info.value)
    assert info.value.step.title.startswith("import checks of api")


@pytest.fixture
def node():
    if shutil.which("node") is None:
        pytest.fail("no `node` on PATH: the Node import checks are run here with it (apt-get install nodejs)",
                    pytrace=False)


def test_node_import_checks_pass_for_modules_node_has(fake_docker, build, node):
    assert check(build, "node", "fs", "path").results[0].output.splitlines() == ["ok fs", "ok path"]


def test_a_node_import_check_that_fails_fails_the_step(fake_docker, build, node):
    with pytest.raises(StepFailed) as info:
        check(build, "node", "fs", "opskit-no-such-package")
    assert info.value.returncode == 1
    assert "import check failed: opskit-no-such-package: MODULE_NOT_FOUND" in str(info.value)


def test_import_checks_run_without_network_on_the_unchecked_tag(build):
    argv = images.check_step(build, IMAGE).argv
    assert argv[:7] == ("docker", "run", "--rm", "--network", "none", "--entrypoint", "python")
    assert argv[7] == images.unchecked(IMAGE) == "registry.example/job-agent-api:unchecked-digest1"


def test_an_image_is_tagged_for_real_only_after_its_checks(make_env):
    """promote comes after the checks in the plan; the runner stops at a failed check, so a broken
    image keeps only its unchecked- tag and never ships."""
    from opskit import render

    env = make_env("production")
    plan = images.plan_builds(env, render.render(env), {}, "rev1")
    for name, build in sorted(env.builds.items()):
        titles = [s.title for s in plan if f" {name} " in f" {s.title} "]
        assert [t.split(" ")[0] for t in titles] == ["build", "import", "tag"], titles


# -- the prisma guard's command line ------------------------------------------------------------------


def guard_main(monkeypatch, result):
    """The guard's `main` with the image reading (the docker SDK, at the edge) replaced by `result`."""
    from opskit.prisma import __main__ as cli

    def check_image(image, command=None, healthcheck=None):
        if isinstance(result, Exception):
            raise result
        return result

    monkeypatch.setattr(cli, "check_image", check_image)
    return cli.main


def test_the_guard_exits_1_and_explains_when_the_image_would_migrate(monkeypatch, capsys):
    from opskit.prisma import check_image_config

    package = {"scripts": {"start": "prisma migrate deploy && node server.js"}}
    found = check_image_config(package, ["docker-entrypoint.sh"], ["npm", "start"])
    assert found  # the control: this image does violate
    assert guard_main(monkeypatch, found)(["frontend:1"]) == 1
    out = capsys.readouterr().out
    assert "prisma guard: frontend:1 refused" in out and "prisma migrate deploy" in out


def test_the_guard_exits_0_for_an_image_that_only_reads_the_schema(monkeypatch, capsys):
    from opskit.prisma import check_image_config

    found = check_image_config({"scripts": {"start": "prisma generate && node server.js"}}, [], ["npm", "start"])
    assert found == []
    assert guard_main(monkeypatch, found)(["frontend:1"]) == 0
    assert "accepted" in capsys.readouterr().out


def test_the_guard_exits_2_when_it_cannot_read_the_image(monkeypatch, capsys):
    assert guard_main(monkeypatch, GuardError("cannot inspect image frontend:1: no such image"))(["frontend:1"]) == 2
    assert "cannot inspect image frontend:1" in capsys.readouterr().err


def test_the_guard_step_fails_the_plan_when_the_image_cannot_be_read(monkeypatch):
    """The real step (`python -m opskit.prisma IMAGE` as a local Check) through the real runner,
    with an engine address where nothing answers: the deploy stops here."""
    from opskit import ROOT
    from opskit.prisma import guard_step

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/opskit-test-docker.sock")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # this checkout's opskit, whatever is installed
    step = guard_step("frontend:1", command=["npm", "start"])
    with pytest.raises(StepFailed) as info:
        Runner(out=io.StringIO()).run(Plan("guard", [step]))
    assert info.value.returncode == 2 and "prisma guard:" in str(info.value)
    assert "hint: Alembic owns the schema" in str(info.value)
