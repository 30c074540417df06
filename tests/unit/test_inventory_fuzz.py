"""Inventories mutated as a careless or hostile user would (types swapped, keys deleted and
duplicated, values replaced with generated strings): loading, checking and rendering either
succeed or say InventoryError/RenderError (exit 2) — never another exception, never a hang,
never a message that grows with the input, and nothing written on failure."""

from __future__ import annotations

import copy
import os
import time

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from opskit import ROOT, inventory, render
from opskit.errors import EXIT_BAD_INPUT, OpskitError
from opskit.inventory import SECRET_NAMES
from tests.unit.test_tasks import invoke

REAL = yaml.safe_load((ROOT / "inventory.yaml").read_text())
SECRETS = {f"OPSKIT_{name.upper()}": f"fuzz-{name}-value" for name in SECRET_NAMES}


def paths(node, prefix=()):
    """Every key path of the document (mappings and lists)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield prefix + (key,)
        yield from paths(value, prefix + (key,))


PATHS = sorted(paths(REAL), key=str)
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                   st.text(max_size=40), st.text(max_size=5000).map(lambda t: t * 3),
                   st.lists(st.text(max_size=8), max_size=3), st.dictionaries(st.text(max_size=8), st.integers(), max_size=3))
MUTATION = st.tuples(st.sampled_from(["replace", "delete", "swap"]), st.sampled_from(PATHS), VALUES)


def mutate(raw: dict, mutations) -> dict:
    out = copy.deepcopy(raw)
    for kind, path, value in mutations:
        parent = out
        try:
            for key in path[:-1]:
                parent = parent[key]
            key = path[-1]
            if kind == "delete":
                del parent[key]
            elif kind == "replace":
                parent[key] = value
            else:  # a value of another type in place of the one there
                old = parent[key]
                parent[key] = [old] if not isinstance(old, list) else {"x": old}
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced a parent
    return out


def assert_bad_input_only(action) -> None:
    started = time.monotonic()
    try:
        action()
    except OpskitError as exc:
        assert exc.exit_code == EXIT_BAD_INPUT, exc
        assert len(str(exc)) < 40_000, "a message grew with the input"
    assert time.monotonic() - started < 10, "a hang"


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(MUTATION, min_size=1, max_size=4), st.sampled_from(["local", "staging", "production"]))
def test_a_mutated_inventory_loads_renders_or_says_exit_2(tmp_path_factory, mutations, name):
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "inventory.yaml"
    path.write_text(yaml.safe_dump(mutate(REAL, mutations), sort_keys=False))
    before = sorted(os.listdir(folder))
    assert_bad_input_only(lambda: inventory.check(path))

    def load_and_render():
        env = inventory.load(name, path=path, with_secrets=name != "local", environ=SECRETS)
        if name != "local":
            render.render(env)
    assert_bad_input_only(load_and_render)
    assert sorted(os.listdir(folder)) == before  # nothing written, on success or failure


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=300))
def test_any_text_as_an_inventory_file_says_exit_2_or_is_valid(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("text") / "inventory.yaml"
    path.write_text(text)
    assert_bad_input_only(lambda: inventory.check(path))


def test_the_command_line_never_shows_a_traceback_for_bad_files(tmp_path):
    """A few mutated files through the real `invoke check` and `invoke render`: exit 0 or 2, no traceback."""
    samples = ["", "- a\n", "defaults: [\n", "environments:\n  local: 3\n", "a: &x 1\nb: *x\n",
               yaml.safe_dump(mutate(REAL, [("replace", ("environments", "production", "domains"), "oops")]))]
    for i, text in enumerate(samples):
        path = tmp_path / f"inventory-{i}.yaml"
        path.write_text(text)
        for args in (["check"], ["render", "-e", "production", "--out", str(tmp_path / f"out-{i}")]):
            done = invoke(*args, env={"OPSKIT_INVENTORY": str(path), **SECRETS})
            assert done.returncode in (0, 2), (args, text, done.stderr[-2000:])
            assert "Traceback" not in done.stderr + done.stdout, (args, text, done.stderr[-2000:])
            assert not (tmp_path / f"out-{i}").exists() or done.returncode == 0
