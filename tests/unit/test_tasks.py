"""The command line, as an operator or CI meets it: exit codes and messages, nothing written on error."""

from __future__ import annotations

import os
import subprocess
import sys

from opskit import ROOT


def invoke(*args, env=None):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPSKIT_")}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=120)


def test_a_missing_secret_exits_2_names_it_and_writes_nothing(tmp_path):
    out = tmp_path / "release"
    done = invoke("render", "-e", "production", "--out", str(out))
    assert done.returncode == 2
    assert "defaults.secrets.api_key: environment variable OPSKIT_API_KEY is not set" in done.stderr
    assert not out.exists()


def test_render_writes_the_release_when_secrets_are_given(tmp_path, secrets_env):
    out = tmp_path / "release"
    done = invoke("render", "-e", "production", "--out", str(out), env=secrets_env)
    assert done.returncode == 0, done.stderr
    assert (out / "docker-compose.yml").is_file() and oct((out / "secrets/api_key").stat().st_mode)[-3:] == "444"
    assert oct((out / "secrets").stat().st_mode)[-3:] == "700"
    assert all(value not in done.stdout + done.stderr for value in secrets_env.values())


def test_every_environment_checks_valid():
    done = invoke("check")
    assert done.returncode == 0 and done.stdout.split() == ["local:", "valid", "production:", "valid",
                                                            "staging:", "valid"]


def test_readme_documents_every_exit_code_as_errors_defines_it():
    from opskit import ROOT
    from opskit.errors import EXIT_CODES

    readme = (ROOT / "README.md").read_text()
    missing = [code for code, meaning in EXIT_CODES.items() if f"| {code} | {meaning} |" not in readme]
    assert not missing, f"README's exit-code table lacks or words differently: {missing}"
