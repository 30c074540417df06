"""What every fact shares: its probe (a real script beside its module, given its paths and
filters as arguments), splitting a script's output, and several facts in one round trip."""

from __future__ import annotations

import posixpath
import subprocess

import pytest

from opskit import ROOT
from opskit.errors import GatherError
from opskit.facts import base, caddy, celery, docker, host, logs, postgres, redis, release, sshd
from opskit.layout import PROJECT_LABEL, SERVICE_LABEL, Layout
from opskit.ssh import Completed

FACTS_DIR = ROOT / "opskit/facts"


def every_fact(env) -> list:
    layout = Layout(env.remote_dir)
    return [host.versions(), host.space(layout, docker_root=True), host.clock(), host.timesync(), host.listeners(),
            sshd.files(), docker.containers(env.project), docker.images(), docker.layers(),
            docker.compose_plan(layout.release("abc")), release.on_disk(layout), release.current(layout),
            caddy.running(env.project, with_root=True), logs.matches(env.project), postgres.admin(env),
            postgres.ui(env), redis.answers(env)]


def _all_secret_values(env):
    return [s.reveal() for s in env.secrets.values()]


def test_no_fact_holds_a_secret_in_its_argv(make_env):
    env = make_env("local")
    for fact in every_fact(env):
        text = " ".join(fact.argv)
        assert not [v for v in _all_secret_values(env) if v in text], fact.name
    assert not [v for v in _all_secret_values(env) if v in " ".join(celery.probe_argv(env, 12))]


def test_shell_scripts_parse(make_env):
    env = make_env("local")
    for argv in [list(f.argv) for f in every_fact(env)] + [celery.probe_argv(env, 12)]:
        if argv[:2] != ["sh", "-c"]:
            continue  # a plain command (date, docker image ls, docker compose)
        done = subprocess.run(["sh", "-n", "-c", argv[2]], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_every_script_is_a_file_and_used():
    scripts = {p.name for p in FACTS_DIR.glob("*.sh")} | {p.name for p in FACTS_DIR.glob("*.sql")}
    sources = "".join(p.read_text() for p in FACTS_DIR.glob("*.py"))
    assert scripts and all(f'"{name}"' in sources for name in scripts - {"lib.sh"})


def test_no_layout_literal_in_a_script():
    """Paths and filters come from opskit.layout as arguments: no script spells them."""
    for path in list(FACTS_DIR.glob("*.sh")) + list(FACTS_DIR.glob("*.sql")):
        text = path.read_text()
        lock = posixpath.basename(Layout("/").lock)
        assert lock not in text and PROJECT_LABEL not in text and SERVICE_LABEL not in text, path.name


def test_sections_split_at_marks():
    text = "noise\n=====opskit:a=====\n1\n2\n\n=====opskit:b_c=====\nx\n"
    assert base.sections(text) == {"a": "1\n2", "b_c": "x"}


def test_marked_blocks_keep_their_order():
    text = "before\n#####path:/a\nx\n#####path:/b\n#####path:/a\ny\n"
    assert base.marked_blocks(text, "path") == [("/a", "x"), ("/b", ""), ("/a", "y")]


# -- several facts in one round trip ---------------------------------------------------------------


def _echo(name: str, text: str, code: int = 0) -> base.Fact:
    return base.Fact(name, ("sh", "-c", f"printf '%s' '{text}'; exit {code}"), lambda out: out)


def test_batch_output_splits_into_each_fact_with_its_exit_code():
    facts = [_echo("a", "one\ntwo"), _echo("b", ""), _echo("c", "no newline at the end", 3)]
    done = subprocess.run(base.batch(facts), capture_output=True, text=True)
    found = base.split(done.stdout)
    assert found == {"a": base.Output("one\ntwo", "", 0), "b": base.Output("", "", 0),
                     "c": base.Output("no newline at the end", "", 3)}


def test_a_fact_cut_off_before_its_end_gets_no_exit_code():
    text = "#####fact:a\nx\n#####exit:0\n\n#####fact:b\npartial"
    assert base.split(text) == {"a": base.Output("x", "", 0), "b": base.Output("partial", "", -1)}


def test_a_script_section_inside_a_fact_stays_in_it():
    text = "#####fact:a\n=====opskit:x=====\n1\n#####exit:0\n#####fact:b\n=====opskit:x=====\n2\n#####exit:0\n"
    found = base.split(text)
    assert base.sections(found["a"].text) == {"x": "1"} and base.sections(found["b"].text) == {"x": "2"}


def test_facts_that_read_stdin_cannot_share_a_round_trip(make_env):
    with pytest.raises(ValueError, match="stdin"):
        base.batch([host.clock(), redis.answers(make_env("local"))])


class Server:
    """Runs argv here, as the server would (sh, printf)."""

    def __init__(self):
        self.calls = []

    def run(self, argv, stdin=None, timeout=None):
        self.calls.append(argv)
        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
        return Completed(done.returncode, done.stdout, done.stderr)


def test_read_runs_several_facts_in_one_round_trip_and_parses_each():
    server = Server()
    a, b = base.read(server, _echo("a", "1"), _echo("b", "2"))
    assert (a.text, b.text) == ("1", "2") and len(server.calls) == 1


def test_read_names_the_fact_that_failed_and_where_to_look():
    with pytest.raises(GatherError, match=r"(?s)could not read the thing \(exit 3\): broken.*more: look here"):
        base.read(Server(), _echo("a", "1"), _echo("b", "broken", 3), what="the thing", more="look here")
    assert base.read(Server(), _echo("b", "broken", 3), check=False).returncode == 3
