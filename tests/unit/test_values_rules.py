"""The rules that let a value reach its destination unchanged, or refuse it by name: the Redis
config and Compose encodings, and the validators of secrets, server paths, emails, commands and Postgres
names. Fast and offline; tests/integration/test_values_arrive.py checks the same on the real parsers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from opskit import render, values
from opskit.errors import InventoryError, RenderError
from opskit.secrets import Secret

utf8_text = st.text(st.characters(codec="utf-8"))


# -- secret files: Redis's config strings -----------------------------------------------------------


def redis_config_arg(src: str) -> bytes:
    """A model of Redis's config-line splitter (sdssplitargs, src/sds.c) for one double-quoted
    argument, enough to check our encoding offline (tests/integration/test_secret_files.py runs
    the real redis-server)."""
    assert src[0] == '"'
    out, i = bytearray(), 1
    while True:
        c = src[i]
        if c == "\\" and src[i + 1] == "x" and all(h in "0123456789abcdefABCDEF" for h in src[i + 2:i + 4]):
            out.append(int(src[i + 2:i + 4], 16))
            i += 4
        elif c == "\\":
            out += {"n": b"\n", "r": b"\r", "t": b"\t", "b": b"\b", "a": b"\a"}.get(src[i + 1], src[i + 1].encode())
            i += 2
        elif c == '"':
            assert i == len(src) - 1, "the argument ends at its closing quote"
            return bytes(out)
        else:
            out += c.encode()
            i += 1


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1))
@example('\\x41"')
@example("\\")
@example("ends in a backslash\\")
def test_every_redis_password_reads_back_from_its_config_line_as_written(value):
    written = render.redis_config_string(value)
    assert all(" " <= c <= "~" for c in written)  # one line, whatever the value holds
    assert redis_config_arg(written) == value.encode()


# -- the compose file: $ doubled, the rest escaped ----------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(utf8_text)
@example("\x7f\x85\u2028\ufeff😀")
@example("$$ ${X:-y} $")
def test_compose_values_are_yaml_that_reads_back_with_each_dollar_doubled(value):
    written = render.compose_value(value)
    assert written.isascii() and "\n" not in written
    assert yaml.safe_load(written) == value.replace("$", "$$")


def test_compose_lists_are_flow_sequences():
    assert render.compose_value(["sh", "-c", 'echo "$HOME"']) == '["sh", "-c", "echo \\"$$HOME\\""]'


# -- secrets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, reason", [
    ("s3cr3t\n", "control character"),
    ("tab\there", "control character"),
    ("nul\0", "control character"),
    ("\udcff-undecodable", "not valid UTF-8"),
    ("x" * 4097, "4097 bytes long"),
    ("", "is empty"),
])
def test_a_secret_that_cannot_arrive_exactly_is_refused_without_its_value(value, reason):
    with pytest.raises(ValueError) as info:
        values.secret(value)
    assert reason in str(info.value)
    assert not value or value[:6] not in str(info.value)


@pytest.mark.parametrize("value", ["ends in a backslash\\", "it's \"$HOME\" # not a comment", " spaced ", "é€😀=%"])
def test_a_secret_with_quotes_backslashes_dollars_or_unicode_is_taken_as_given(value):
    assert values.secret(value) == value


def test_the_flower_password_is_at_most_72_bytes_for_bcrypt():
    assert values.bcrypt_password("€" * 24) == "€" * 24  # 72 bytes
    with pytest.raises(ValueError, match=r"^is 75 bytes long, but bcrypt .* at most 72 bytes"):
        values.bcrypt_password("€" * 25)


def test_a_refused_secret_names_its_key_and_never_its_value(make_env, secrets_env):
    environ = dict(secrets_env, OPSKIT_API_KEY="the-api-key\n", OPSKIT_FLOWER_PASSWORD="f" * 100,
                   OPSKIT_APP_SECRET_KEY="ends-in-backslash\\")
    with pytest.raises(InventoryError) as info:
        make_env("production", environ=environ)
    problems = info.value.problems
    assert [p.split(":")[0] for p in problems] == ["defaults.secrets.api_key", "defaults.secrets.flower_password"]
    assert "the-api-key" not in str(info.value) and "fff" not in str(info.value)


def test_render_refuses_a_hand_made_environment_with_a_secret_bcrypt_cannot_take(make_env):
    env = make_env("production")
    env = replace(env, secrets={**env.secrets, "flower_password": Secret("p" * 100, "flower_password")})
    with pytest.raises(RenderError, match=r"secrets\.flower_password: the value is 100 bytes long") as info:
        render.render(env)
    assert "ppp" not in str(info.value)


# -- inventory values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["/srv/a:b", "/srv/my app", "/srv/$PROJECT", "srv/x", "/srv/../etc", "/srv/x\n",
                                   "/srv/'x'"])
def test_a_server_path_that_a_volume_spec_or_a_command_would_change_is_refused(value):
    with pytest.raises(ValueError, match="is not an absolute path of letters"):
        values.server_path(value)


def test_a_server_path_loses_its_trailing_slash():
    assert values.server_path("/srv/job-agent_2/") == "/srv/job-agent_2"


@pytest.mark.parametrize("value", ["a{$HOME}@x.io", "a b@x.io", '"a"@x.io', "a#b@x.io", "ops@example.com\n",
                                   "a@b", "a}@x.io", "a@-x.io"])
def test_an_email_the_caddyfile_would_read_otherwise_is_refused(value):
    with pytest.raises(ValueError, match="is not an email address"):
        values.email(value)


def test_an_ordinary_email_is_accepted():
    assert values.email("ops.team+acme@Mail.Example.io") == "ops.team+acme@Mail.Example.io"


def test_command_words_keep_dollars_and_quotes_but_not_nul():
    assert values.argv(["sh", "-c", 'echo "$HOME" \'x\'']) == ("sh", "-c", 'echo "$HOME" \'x\'')
    with pytest.raises(ValueError, match="word 1 .* holds a NUL"):
        values.argv(["sh", "a\0b"])
    with pytest.raises(ValueError, match="first word"):
        values.argv(["", "x"])


@pytest.mark.parametrize("field, value, message", [
    ("database", "job_agent\n", "holds a newline"),
    ("admin_role", "x" * 64, "1 to 63 bytes"),
])
def test_a_postgres_name_is_one_line_of_at_most_63_bytes(make_env, field, value, message):
    with pytest.raises(InventoryError) as info:
        make_env("production", lambda raw: raw["environments"]["production"].setdefault("postgres", {})
                 .update({field: value}))
    [problem] = info.value.problems
    assert problem.startswith(f"environments.production.postgres.{field}: ") and message in problem


def test_a_dollar_in_the_database_name_is_escaped_in_the_compose_file(make_env):
    env = make_env("production", lambda raw: raw["environments"]["production"].setdefault("postgres", {})
                   .update(database="job$agent"))
    compose = render.render(env).files["docker-compose.yml"].content.decode()
    assert 'POSTGRES_DB: "job$$agent"' in compose and '"--dbname", "job$$agent"]' in compose
