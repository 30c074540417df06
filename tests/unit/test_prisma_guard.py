"""The Prisma guard on data: package.json scripts, ENTRYPOINT/CMD and the compose command, followed
the way npm, yarn, pnpm and a shell run them. tests/integration/test_prisma_image.py reads real images."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from opskit import ROOT
from opskit.errors import GuardError
from opskit.prisma import check_commands, check_image_config, effective_commands, explain, guard_step
from opskit.steps import LOCAL, Check

FRONTEND = ROOT / "tests/fixtures/app/frontend"


def sample_package() -> dict:
    return json.loads((FRONTEND / "package.json").read_text())


def dockerfile_cmd(path) -> list:
    """The exec-form CMD of a Dockerfile (the last one wins, as in Docker)."""
    cmds = re.findall(r"^CMD\s+(\[.*\])\s*$", path.read_text(), re.M)
    return json.loads(cmds[-1])


def refused(package, cmd, entrypoint=(), **kwargs) -> list:
    return check_image_config(package, list(entrypoint), cmd, **kwargs)


def commands_of(violations) -> list:
    return [v.command for v in violations]


# -- the cases the issue names ------------------------------------------------------------------------


def test_a_start_script_running_prisma_migrate_deploy_is_refused():
    found = refused({"scripts": {"start": "prisma migrate deploy && node server.js"}}, ["npm", "start"])
    assert commands_of(found) == ["prisma migrate deploy"]
    text = str(found[0])
    assert text.startswith('CMD `npm start` -> npm script "start": `prisma migrate deploy && node server.js`')
    assert "refused" in text and "Alembic (SQLAlchemy) owns the schema" in text


def test_a_prestart_hook_running_prisma_db_push_is_refused():
    package = {"scripts": {"prestart": "prisma db push --skip-generate", "start": "node server.js"}}
    found = refused(package, ["npm", "start"], entrypoint=["docker-entrypoint.sh"])
    assert commands_of(found) == ["prisma db push --skip-generate"]
    assert found[0].chain == ('npm script "prestart": `prisma db push --skip-generate`',)
    assert "dropping what it does not know" in found[0].reason


def test_a_chain_of_npm_run_scripts_is_followed_to_the_migration():
    package = {"scripts": {"start": "npm run migrate && next start", "migrate": "npm run db:migrate",
                           "db:migrate": "npx --yes prisma@5.22.0 migrate deploy --schema ./prisma/schema.prisma"}}
    found = refused(package, ["npm", "start"])
    assert commands_of(found) == ["prisma migrate deploy --schema ./prisma/schema.prisma"]
    assert [c.split(":")[0] for c in found[0].chain] == ['npm script "start"', 'npm script "migrate"',
                                                         'npm script "db']


def test_prisma_db_pull_and_generate_are_accepted():
    package = {"scripts": {"start": "prisma db pull && prisma generate && node server.js",
                           "postinstall": "prisma generate"}}
    assert refused(package, ["npm", "start"]) == []
    assert refused(package, ["sh", "-c", "npx prisma db pull --print; npx prisma generate"]) == []


def test_the_sample_frontend_is_accepted():
    package, cmd = sample_package(), dockerfile_cmd(FRONTEND / "Dockerfile")
    assert cmd == ["node", "server.js"]
    # its scripts mention prisma (db pull, generate), and the deployment adds a healthcheck
    assert refused(package, cmd, entrypoint=["docker-entrypoint.sh"], healthcheck=["node", "healthcheck.js"]) == []
    assert refused(package, ["npm", "start"]) == []
    assert refused(package, ["npm", "run", "db:pull"]) == []


# -- how commands reach prisma ----------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "npx prisma migrate deploy",
    "npx -y prisma@latest migrate deploy",
    "pnpx prisma migrate deploy",
    "bunx prisma db push",
    "./node_modules/.bin/prisma migrate deploy",
    "node node_modules/prisma/build/index.js migrate deploy",
    "npm exec -- prisma migrate deploy",
    "yarn prisma migrate deploy",
    "yarn dlx prisma db push",
    "pnpm exec prisma migrate reset --force",
    "pnpm dlx prisma migrate deploy",
    "exec env NODE_ENV=production prisma migrate deploy",
    "DATABASE_URL=x prisma migrate deploy",
    "prisma --schema ./db/schema.prisma migrate deploy",
    "npx prisma db execute --file x.sql",
    "echo start; if true; then prisma migrate deploy; fi",
    "(cd app && prisma db push) > /dev/null 2>&1",
    "echo $(prisma migrate deploy)",
    "echo `prisma migrate deploy`",
])
def test_every_way_of_calling_prisma_migrate_or_db_push_is_found(line):
    found = check_commands({"scripts": {}}, [("CMD", ["sh", "-c", line])])
    assert len(found) == 1, found
    assert re.search(r"^prisma .*(migrate|db (push|execute))", found[0].command)


@pytest.mark.parametrize("line", [
    "prisma generate", "npx prisma db pull", "prisma validate", "prisma format", "prisma --version",
    "node server.js", "echo 'do not run prisma migrate here'", "next start",
])
def test_read_only_and_unrelated_commands_pass(line):
    assert check_commands({"scripts": {}}, [("CMD", ["sh", "-c", line])]) == []


@pytest.mark.parametrize("cmd", [
    ["yarn", "start"], ["yarn", "run", "start"], ["pnpm", "start"], ["pnpm", "run", "start"], ["bun", "run", "start"],
    ["npm", "run-script", "start"], ["npm", "--prefix", "/app", "start"], ["run-s", "st*"],
    ["concurrently", "npm:start", "node worker.js"],
])
def test_package_managers_run_scripts_with_their_hooks(cmd):
    package = {"scripts": {"prestart": "prisma migrate deploy", "start": "node server.js"}}
    assert commands_of(refused(package, cmd)) == ["prisma migrate deploy"], cmd


def test_an_install_at_start_runs_the_install_hooks():
    assert commands_of(refused({"scripts": {"postinstall": "prisma db push"}}, ["npm", "ci"])) == ["prisma db push"]


def test_a_script_that_calls_itself_is_followed_once():
    package = {"scripts": {"start": "npm run start; prisma migrate deploy"}}
    assert commands_of(refused(package, ["npm", "start"])) == ["prisma migrate deploy"]


def test_unparseable_shell_falls_back_to_refusing_what_it_mentions():
    found = check_commands(None, [("CMD", ["sh", "-c", "prisma migrate deploy && echo 'unbalanced"])])
    assert commands_of(found) == ["prisma migrate"]


def test_npm_start_without_a_package_json_cannot_be_checked_so_it_is_refused():
    found = refused(None, ["npm", "start"])
    assert len(found) == 1 and "no package.json was found" in found[0].reason


# -- what Docker runs -------------------------------------------------------------------------------


def test_the_compose_command_replaces_cmd():
    package = {"scripts": {"migrate": "prisma migrate deploy", "start": "node server.js"}}
    assert refused(package, ["npm", "start"]) == []
    found = refused(package, ["npm", "start"], command=["npm", "run", "migrate"])
    assert found and found[0].origin == "compose command `npm run migrate`"
    assert refused(package, ["npm", "run", "migrate"], command="node server.js") == []


def test_effective_commands_follow_docker():
    assert effective_commands(["docker-entrypoint.sh"], ["node", "server.js"]) == [
        ("ENTRYPOINT + CMD", ["docker-entrypoint.sh", "node", "server.js"]), ("CMD", ["node", "server.js"])]
    assert effective_commands([], ["/bin/sh", "-c", "npm start"], healthcheck=["CMD-SHELL", "curl -f localhost"]) == [
        ("CMD", ["/bin/sh", "-c", "npm start"]), ("healthcheck", ["/bin/sh", "-c", "curl -f localhost"])]


def test_an_entrypoint_shell_script_is_read_from_the_image():
    files = {"/usr/local/bin/entry.sh": "#!/bin/sh\nset -e\nnpx prisma migrate deploy\nexec \"$@\"\n",
             "server.js": "#!/usr/bin/env node\n// prisma migrate deploy is never run from here\n"}
    read = lambda path: files.get(path if path.startswith("/") else path) or files.get(f"/usr/local/bin/{path}")  # noqa: E731
    found = refused({"scripts": {}}, ["node", "server.js"], entrypoint=["entry.sh"], read=read)
    assert commands_of(found) == ["prisma migrate deploy"]
    assert found[0].chain == ("script file entry.sh",)
    # a node script with a shebang is not read as shell
    assert refused({"scripts": {}}, ["./server.js"], read=read) == []


def test_a_sourced_or_sh_run_file_is_read_and_exec_of_args_is_left_to_the_cmd_check():
    files = {"./migrate.sh": "npx prisma migrate deploy\n", "start.sh": "#!/bin/sh\n. ./migrate.sh\nexec \"$@\"\n"}
    asked = []
    read = lambda path: asked.append(path) or files.get(path)  # noqa: E731
    found = refused({"scripts": {}}, ["node", "server.js"], entrypoint=["sh", "start.sh"], read=read)
    assert [(v.chain, v.command) for v in found] == [
        (("script file start.sh", "script file ./migrate.sh"), "prisma migrate deploy")]
    assert asked == ["start.sh", "./migrate.sh"]  # neither `node` nor `"$@"` is looked up


def test_the_same_violation_reached_twice_is_reported_once():
    found = refused({"scripts": {"start": "prisma db push"}}, ["npm", "start"], entrypoint=["tini", "--"])
    assert len(found) == 1 and found[0].origin == "ENTRYPOINT + CMD `tini -- npm start`"


# -- the step and the words ------------------------------------------------------------------------


def test_explain_says_why_and_how_to_fix():
    text = explain("jobagent/frontend:abc", refused({"scripts": {"start": "prisma migrate deploy"}}, ["npm", "start"]))
    assert text.splitlines()[0] == "prisma guard: jobagent/frontend:abc refused: it would change the schema with Prisma"
    assert "schema changes go in an Alembic migration" in text
    assert explain("img", []).endswith("accepted")


def test_guard_step_is_a_local_check_of_the_image_and_its_command():
    step = guard_step("jobagent/frontend:abc", command=("npm", "start"))
    assert isinstance(step, Check) and step.on == LOCAL
    assert step.argv == (sys.executable, "-m", "opskit.prisma", "jobagent/frontend:abc",
                         "--command", '["npm", "start"]')
    assert "Alembic owns the schema" in step.hint


def test_the_command_line_exits_1_when_refused_0_when_accepted_and_2_when_the_image_cannot_be_read(
        monkeypatch, capsys):
    from opskit.prisma import __main__ as cli

    found = refused({"scripts": {"start": "prisma migrate deploy"}}, ["npm", "start"])
    asked = []
    monkeypatch.setattr(cli, "check_image", lambda *args: asked.append(args) or found)
    assert cli.main(["img:1", "--command", '["npm", "start"]', "--healthcheck", '["CMD", "true"]']) == 1
    assert asked == [("img:1", ["npm", "start"], ["CMD", "true"])]
    assert "prisma guard: img:1 refused" in capsys.readouterr().out
    monkeypatch.setattr(cli, "check_image", lambda *args: [])
    assert cli.main(["img:1"]) == 0
    assert capsys.readouterr().out.strip().endswith("accepted")

    def unreadable(*args):
        raise GuardError("cannot inspect image img:1: No such image (build it first)")

    monkeypatch.setattr(cli, "check_image", unreadable)
    assert cli.main(["img:1"]) == 2
    assert "cannot inspect image img:1" in capsys.readouterr().err


def test_the_module_the_guard_step_runs_is_a_command_line():
    argv = guard_step("img:1").argv
    done = subprocess.run([*argv[:3], "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and "--healthcheck" in done.stdout, done.stderr
