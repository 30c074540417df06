"""The smoke suite's secret scan (tests/smoke/secret_scan.py): its server script, run here with
this machine's python3 over files, finds a secret in any of its forms anywhere in a line, names
the secret and never carries a value, in or out."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from urllib.parse import quote

import pytest

from opskit.secrets import Secret
from opskit.ssh import Completed
from tests.smoke import secret_scan


class Env:
    """Just what the scan reads of an Environment."""

    flower_user = "admin"

    def __init__(self, **values):
        self.secrets = {k: Secret(v, k) for k, v in values.items()}


class Local:
    """`Remote.run` on this machine."""

    def __init__(self):
        self.requests = []

    def run(self, argv, stdin=None, timeout=60):
        self.requests.append((list(argv), stdin))
        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
        return Completed(done.returncode, done.stdout, done.stderr)


ENV = Env(api_key="k3y-Value/with:sp ce&é", redis_password="r3dis-pass-word", flower_password="fl0wer-pass",
          short="abc")


def scan_texts(tmp_path, texts: dict, env=ENV, skip=()):
    for name, text in texts.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    local = Local()
    result = secret_scan.scan(local, env, [secret_scan.files([str(tmp_path)], skip)])
    return result, local


def found(result) -> set:
    return {(h.where.rsplit("/", 1)[-1], h.secret, h.form) for h in result.hits}


def test_a_secret_glued_into_a_longer_line_is_found_by_name_and_form(tmp_path):
    key = ENV.secrets["api_key"].reveal()
    result, _ = scan_texts(tmp_path, {
        "a.log": f"INFO request headers={{'x-api-key': '{key}'}} done\n",
        "b.log": f"GET /x?key={quote(key, safe='')}&y=1\nnext line\n",
        "c.log": "Authorization: Basic " + base64.b64encode(b"admin:fl0wer-pass").decode() + "\n",
        "d.log": "redis://:r3dis-pass-word@redis:6379/0",
        "clean.log": "nothing secret here, not even r3dis-pass or fl0wer\n" * 50,
    })
    assert found(result) == {("a.log", "api_key", "plain"), ("b.log", "api_key", "url-encoded"),
                             ("c.log", "flower_password", "basic-auth"), ("d.log", "redis_password", "plain"),
                             # "admin:" is two whole base64 blocks: the password's own base64 follows it
                             ("c.log", "flower_password", "base64")}
    assert result.counts["sources"] == 5 and result.counts["bytes"] > 0


def test_no_value_travels_to_the_server_or_back(tmp_path):
    key = ENV.secrets["api_key"].reveal()
    result, local = scan_texts(tmp_path, {"a.log": f"x{key}x\n"})
    [(argv, stdin)] = local.requests
    sent = " ".join(argv).encode() + stdin
    for _, _, data in secret_scan.forms(ENV):
        assert data not in sent
    assert result.hits and all(key not in repr(h) for h in result.hits)


def test_a_short_secret_is_left_out_rather_than_matching_ordinary_text(tmp_path):
    result, _ = scan_texts(tmp_path, {"a.log": "abc abc abc\n"})
    assert not result.hits
    assert "short" not in {name for name, _, _ in secret_scan.forms(ENV)}


def test_skipped_paths_are_not_read_and_unreadable_files_are_reported(tmp_path):
    result, _ = scan_texts(tmp_path, {"secrets/api_key": ENV.secrets["api_key"].reveal(), "compose.yml": "x: 1\n"},
                           skip=["secrets"])
    assert not result.hits and result.counts["sources"] == 1
    locked = tmp_path / "locked.txt"
    locked.write_text("x")
    locked.chmod(0)
    try:
        result, _ = scan_texts(tmp_path, {}, skip=["secrets"])
    finally:
        locked.chmod(0o600)
    if os.geteuid() != 0:  # root reads anything
        assert [u for u in result.unreadable if "locked.txt" in u]


def test_a_scan_that_does_not_finish_is_an_error_not_a_pass():
    with pytest.raises(RuntimeError, match="did not finish"):
        secret_scan.parse('{"where": "x", "what": 0}\n', [("api_key", "plain")])


def test_a_few_thousand_log_lines_scan_in_seconds(tmp_path):
    lines = "".join(f"2026-12-01T03:00:{i % 60:02d} INFO worker[{i}] task app.tasks.ping succeeded in 0.01s: pong\n"
                    for i in range(3000))
    started = time.monotonic()
    result, _ = scan_texts(tmp_path, {"big.log": lines})
    assert not result.hits and result.counts["lines"] == 3000
    assert time.monotonic() - started < 30
