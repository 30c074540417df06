"""The smoke suite's runner: how it is started, its groups, and the services it expects."""

from __future__ import annotations

import sys

from opskit import ROOT, render, smoke


def test_pytest_args_point_at_the_suite_and_environment():
    args = smoke.pytest_args("production")
    assert args[0] == str(ROOT / "tests/smoke")
    assert args[args.index("--env") + 1] == "production"
    assert not any(a.startswith("--junitxml") for a in args)


def test_pytest_args_write_junit_and_pass_extras_through():
    args = smoke.pytest_args("local", junit="build/smoke.xml", extra=("-k", "redis", "-x"))
    assert "--junitxml=build/smoke.xml" in args
    assert args[-3:] == ["-k", "redis", "-x"]


def test_run_starts_pytest_in_a_subprocess(monkeypatch):
    seen = {}

    class Done:
        returncode = 1

    def fake_run(argv, cwd):
        seen.update(argv=argv, cwd=cwd)
        return Done()

    monkeypatch.setattr(smoke.subprocess, "run", fake_run)
    assert smoke.run("local", junit="x.xml", extra=["-m", "http"]) == 1
    assert seen["argv"][:3] == [sys.executable, "-m", "pytest"]
    assert seen["argv"][3:] == smoke.pytest_args("local", "x.xml", ["-m", "http"])
    assert seen["cwd"] == ROOT


def test_every_marker_has_a_test_module():
    modules = {p.stem for p in (ROOT / "tests/smoke").glob("test_*.py")}
    assert {f"test_{m}" for m in smoke.MARKERS} <= modules


def test_expected_services(make_env):
    env = make_env("local")
    assert smoke.expected_services(env) == ("api", "beat", "flower", "frontend", "worker", "postgres", "redis", "caddy")


def test_secret_files_match_what_render_writes(make_env):
    env = make_env("local")
    release = render.render(env)
    written = {p[len("secrets/"):] for p in release.files if p.startswith("secrets/")}
    assert written == set(smoke.secret_files(env))


def test_the_clock_skew_limit_comes_from_the_inventory(make_env):
    assert make_env("local").smoke.max_clock_skew.seconds == 2


def test_compose_hints_name_the_project(make_env):
    env = make_env("local")
    assert smoke.compose_hint(env, "logs", "api") == f"docker compose -p {env.project} logs api"
