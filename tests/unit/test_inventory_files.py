"""The inventory and secrets files as a careless or hostile user writes them: read strictly, every
problem reported at once with file, line and column, nothing coerced, no message that grows."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import yaml

from opskit import ROOT, inventory
from opskit.errors import InventoryError, SecretError
from opskit.inventory import SECRET_NAMES


def problems(path) -> list[str]:
    with pytest.raises(InventoryError) as info:
        inventory.check(path)
    return info.value.problems


def write(tmp_path, text: str, name: str = "inventory.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def real(tmp_path, tail: str = ""):
    return write(tmp_path, (ROOT / "inventory.yaml").read_text() + tail)


# -- YAML read strictly ---------------------------------------------------------------------------


def test_a_second_environment_block_of_the_same_name_is_an_error_with_both_lines(tmp_path):
    path = real(tmp_path, "  production:\n    host: 198.51.100.7\n")
    first = next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line == "  production:")
    [problem] = problems(path)
    assert problem.startswith("inventory.yaml:") and f"duplicate key 'production' (first at line {first})" in problem


def test_an_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    path = write(tmp_path, "version: 1\ndefaults:\n" + "".join(f"  {line}\n" for line in bomb.splitlines())
                 + "environments: {}\n")
    started = time.monotonic()
    [problem] = problems(path)
    assert time.monotonic() - started < 2
    assert "alias *a is not allowed" in problem and len(problem) < 200


@pytest.mark.parametrize("text, where", [("defaults: [\n", "inventory.yaml:2:1"),
                                         ("a:\n  b: c\n d: e\n", "inventory.yaml:3:2"),
                                         ("a: 'unclosed\n", "inventory.yaml:2:1")])
def test_invalid_yaml_names_file_line_and_column(tmp_path, text, where):
    [problem] = problems(write(tmp_path, text))
    assert problem.startswith(where + ":"), problem


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "version: 1\ndefaults: {}\n", "environments: {}\n", "42\n"])
def test_a_file_that_is_no_inventory_is_an_error_not_silence(tmp_path, text):
    assert "environments: is required" in problems(write(tmp_path, text))[0]


def test_check_reports_the_problems_of_every_environment_at_once(tmp_path):
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    raw["environments"]["staging"]["host"] = "not a host!"
    raw["environments"]["production"]["domains"]["api"] = "api example com"
    raw["environments"]["production"]["ssh"] = {"port": 70000}
    found = problems(write(tmp_path, yaml.safe_dump(raw)))
    assert any(p.startswith("environments.staging.host:") for p in found)
    assert any(p.startswith("environments.production.domains.api:") for p in found)
    assert any(p.startswith("environments.production.ssh.port:") for p in found)


def test_the_real_inventory_checks_whole():
    assert inventory.check() == ["local", "production", "staging"]


def test_a_huge_value_is_cut_short_in_its_message(tmp_path):
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    raw["environments"]["production"]["domains"]["api"] = "x" * 100_000
    [problem] = problems(write(tmp_path, yaml.safe_dump(raw)))
    assert problem.startswith("environments.production.domains.api:") and len(problem) < 300


@pytest.mark.parametrize("field, value", [("domains.api", "api.example.com\n"), ("flower.user", "admin\n"),
                                          ("remote_dir", "/srv/job\nagent"), ("host", "203.0.113.10\n")])
def test_a_trailing_newline_is_no_valid_value(tmp_path, field, value):
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    node = raw["environments"]["production"]
    *parents, last = field.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    assert any(p.startswith(f"environments.production.{field}:") for p in problems(write(tmp_path, yaml.safe_dump(raw))))


# -- secrets files ----------------------------------------------------------------------------------


def staging_with(tmp_path, secrets_path):
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    raw["environments"]["staging"]["secrets_file"] = str(secrets_path)
    return write(tmp_path, yaml.safe_dump(raw))


def secrets_problems(tmp_path, secrets_path) -> list[str]:
    with pytest.raises(SecretError) as info:
        inventory.load("staging", path=staging_with(tmp_path, secrets_path))
    return info.value.problems


def full_secrets(path, mode=0o600, **override):
    values = {name: f"value-of-{name}" for name in SECRET_NAMES} | override
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    path.chmod(mode)
    return path


def test_secrets_are_taken_as_written_never_coerced(tmp_path):
    path = full_secrets(tmp_path / "s.yaml", api_key="0123", app_secret_key="yes", better_auth_secret="1e3")
    env = inventory.load("staging", path=staging_with(tmp_path, path))
    assert [env.secrets[k].reveal() for k in ("api_key", "app_secret_key", "better_auth_secret")] == ["0123", "yes", "1e3"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secrets_file_others_can_read_is_refused(tmp_path, mode):
    [problem] = secrets_problems(tmp_path, full_secrets(tmp_path / "s.yaml", mode))
    assert f"has mode {mode:04o}" in problem and "chmod 600" in problem


def test_a_secrets_file_of_another_user_is_refused(tmp_path):
    path = full_secrets(tmp_path / "s.yaml")
    if os.geteuid() != 0:
        pytest.fail("this test changes a file's owner: run the unit tier as root, as CI does")
    os.chown(path, 65534, 65534)
    [problem] = secrets_problems(tmp_path, path)
    assert "belongs to another user" in problem


def git(repo, *argv):
    subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)


def test_a_secrets_file_git_would_commit_is_refused(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    [problem] = secrets_problems(tmp_path, full_secrets(repo / "secrets.yaml"))
    assert "tracked by git, or git would commit it" in problem


def ignored_folder(tmp_path):
    """A git work tree whose `private/` folder git ignores; that folder."""
    repo = tmp_path / "repo"
    (repo / "private").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("private/\n")
    return repo / "private"


def test_a_secrets_file_force_added_under_an_ignored_folder_is_refused(tmp_path):
    path = full_secrets(ignored_folder(tmp_path) / "secrets.yaml")
    git(path.parent.parent, "add", "-f", "private/secrets.yaml")
    [problem] = secrets_problems(tmp_path, path)
    assert "tracked by git" in problem


def test_an_ignored_untracked_secrets_file_is_accepted(tmp_path):
    env = inventory.load("staging", path=staging_with(tmp_path, full_secrets(ignored_folder(tmp_path) / "secrets.yaml")))
    assert env.secrets["api_key"].reveal() == "value-of-api_key"


def test_a_secrets_file_with_a_duplicate_key_is_refused_with_its_line(tmp_path):
    path = full_secrets(tmp_path / "s.yaml")
    path.write_text(path.read_text() + "api_key: second\n")
    problem = secrets_problems(tmp_path, path)[0]
    assert "duplicate key 'api_key'" in problem and str(path) in problem
