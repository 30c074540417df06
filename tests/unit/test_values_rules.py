"""The rules that let a value reach its destination unchanged, or refuse it by name: the env-file
and Compose encodings, and the validators of secrets, server paths, emails, commands and Postgres
names. Fast and offline; tests/integration/test_values_arrive.py checks the same on the real parsers."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from opskit import render, values
from opskit.errors import InventoryError, RenderError
from opskit.secrets import Secret

utf8_text = st.text(st.characters(codec="utf-8"))


# -- env files: compose-go's double-quoted values ---------------------------------------------------


def dotenv_double_quoted(src: str) -> str:
    """A model of compose-go's dotenv parser for `"..."` (dotenv/parser.go extractVarValue,
    expandEscapes; template.Substitute for `$$`), enough to check our encoding offline."""
    assert src[0] == '"'
    chars, escaped, i = [], False, 1
    while src[i] != '"' or escaped:
        c = src[i]
        if c == '"':
            chars.append(c)
            escaped = False
        elif escaped:
            chars += ["\\", c]
            escaped = False
        elif c == "\\":
            escaped = True
        else:
            chars.append(c)
        i += 1
    assert i == len(src) - 1, "the value ends at its closing quote"
    table = {"a": "\a", "b": "\b", "c": "\\c", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "$": "$$",
             '"': '"', "\\": "\\"}
    expanded = re.sub(r'\\([abcfnrtv$"\\])', lambda m: table[m.group(1)], "".join(chars))
    return re.sub(r"\$\$", "$", expanded)


@pytest.mark.parametrize("value, written", [
    ("key\\", '"key\\\\"'),
    ("$HOME ${X}", '"\\$HOME \\${X}"'),
    ("it's \"quoted\"", '"it\'s \\"quoted\\""'),
    ("a # b", '"a # b"'),
    ("two\nlines\r", '"two\\nlines\\r"'),
])
def test_env_values_are_double_quoted_with_four_escapes(value, written):
    assert render.env_value(value) == written
    assert dotenv_double_quoted(written) == value


@settings(max_examples=300, deadline=None)
@given(utf8_text.filter(lambda s: "\0" not in s))
@example("\\")
@example('\\"')
@example("\\$$")
def test_every_env_value_reads_back_as_written(value):
    assert dotenv_double_quoted(render.env_value(value)) == value


@pytest.mark.parametrize("value", ["nul\0byte", "\ud800"])
def test_nul_and_non_utf8_cannot_be_written_to_an_env_file(value):
    with pytest.raises(ValueError, match="NUL or is not valid UTF-8"):
        render.env_value(value)


def test_a_render_error_about_an_env_value_names_the_key_not_the_value():
    with pytest.raises(RenderError) as info:
        render._env_file("api", [("API_KEY", "hidden\0value")])
    assert "API_KEY" in str(info.value) and "hidden" not in str(info.value)


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
