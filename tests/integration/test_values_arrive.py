"""Every value reaches its destination unchanged, or is refused by name: checked on the real
parsers (`docker compose config` for the compose file and its secret files, `caddy adapt` for the Caddyfile)
over generated values, hostile ones included.

Each property states the rule for any input: either inventory loading refuses the value with its
key path (a secret's value never in the message), or the rendered release, read back by the real
parser, holds exactly the value given.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import bcrypt
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from opskit import ROOT, inventory, release_folder, render, values
from opskit.errors import InventoryError, RenderError
from opskit.inventory import APP_SERVICES, SECRET_NAMES
from tests.integration.caddy_process import CADDY

pytestmark = [pytest.mark.docker, pytest.mark.caddy]

ENV = "production"
BOUNDED = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# text as a careless or hostile user types it: the characters every parser on the way treats
# specially, plus any Unicode (hypothesis's text() leaves out lone surrogates; examples add one)
TRICKY = "\\\"'`$#= {}:@/%?&;|\n\r\t\0\x7f\x85\u2028é€😀"
any_text = st.text(min_size=1, max_size=24) | st.text(TRICKY + "ab", min_size=1, max_size=24)
no_nul = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=24) | st.text(
    TRICKY.replace("\0", "") + "ab", max_size=24)


# -- the real parsers ----------------------------------------------------------------------------


def compose_config(folder: Path) -> dict:
    """`docker compose config` of the folder's compose file.
    Its output is a compose file again, so it writes each literal `$` as `$$`: read that back."""
    done = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=folder,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return _undollar(json.loads(done.stdout))


def _undollar(node):
    if isinstance(node, dict):
        return {k: _undollar(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_undollar(v) for v in node]
    return node.replace("$$", "$") if isinstance(node, str) else node


def caddy_adapt(path: Path) -> dict:
    done = subprocess.run([CADDY, "adapt", "--config", str(path), "--adapter", "caddyfile"], capture_output=True,
                          text=True, timeout=60, env={"HOME": str(path.parent), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def found(node, key):
    """Every value under `key`, anywhere in a parsed JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from found(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from found(v, key)


def cases(**fields):
    """One value per field: all from their accepted strategy (half of the examples), or with some
    fields from the hostile one, so both halves of each rule are exercised."""

    @st.composite
    def draw_case(draw):
        hostile = draw(st.booleans())
        return {name: draw(bad if hostile and draw(st.booleans()) else good) for name, (good, bad) in fields.items()}

    return draw_case()


# -- the inventory under test --------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The real inventory, its build contexts in a temporary folder, and a scratch folder."""
    folder = tmp_path_factory.mktemp("arrive")
    raw = yaml.safe_load((ROOT / "inventory.yaml").read_text())
    for name in ("api", "frontend"):
        ctx = folder / "ctx" / name
        ctx.mkdir(parents=True)
        (ctx / "Dockerfile").write_text(f"FROM scratch\nLABEL name={name}\n")
        raw["defaults"]["builds"][name]["context"] = str(ctx)
    return raw, folder


def load(base, edit=None, secrets=None):
    raw, folder = base
    raw = copy.deepcopy(raw)
    if edit:
        edit(raw["environments"][ENV])
    given = {name: f"plain-{name}" for name in SECRET_NAMES} | (secrets or {})
    environ = {f"OPSKIT_{name.upper()}": value for name, value in given.items()}
    return inventory.parse(raw, ENV, base=folder, environ=environ)


def written(base, env, name="release") -> Path:
    out = base[1] / name
    return release_folder.write(render.render(env), out)


def refused_at(exc: InventoryError, path: str) -> list[str]:
    return [p for p in exc.problems if p.startswith(f"environments.{ENV}.{path}:")]


# -- secret files: where Compose finds them ---------------------------------------------------------


def secret_files(folder: Path, resolved: dict, service: str) -> dict[str, bytes]:
    """{file name: content} of what `service` gets under /run/secrets, read from the release
    folder (the server copies it, byte for byte, to the folder Compose names)."""
    names = [s["source"] for s in resolved["services"][service].get("secrets", [])]
    return {n: (folder / "secrets" / n).read_bytes() for n in names}


# -- rule 2: secrets arrive byte-identical or are refused --------------------------------------------


secret_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=24) | st.text(
    TRICKY.replace("\0", "").replace("\n", "").replace("\r", "").replace("\t", "").replace("\x7f", "") + "ab",
    min_size=1, max_size=24)
secret_values = cases(**{name: (secret_text, any_text | st.text(min_size=60, max_size=90)) for name in SECRET_NAMES})


@BOUNDED
@given(secret_values)
@example({name: "ends in a backslash\\" for name in SECRET_NAMES})
@example({name: f"{i}'\"$HOME ${{X}} #=%:@/ é😀" for i, name in enumerate(SECRET_NAMES)})
@example({**{name: "fine" for name in SECRET_NAMES}, "flower_password": "x" * 100, "api_key": "line\n",
          "redis_password": "\ud800"})
def test_every_secret_arrives_byte_identical_or_is_refused_by_name(base, secrets):
    try:
        env = load(base, secrets=secrets)
    except InventoryError as exc:
        for problem in exc.problems:
            name = re.match(r"^(?:defaults|environments\.\w+)\.secrets\.(\w+): the value ", problem)
            assert name, problem
            assert re.search(r"control character|UTF-8|bytes long", problem), problem
            for value in secrets.values():
                assert len(value) < 4 or value not in problem
        refused = {re.match(r".*?\.secrets\.(\w+):", p).group(1) for p in exc.problems}
        for name, value in secrets.items():
            if name not in refused:
                inventory.secrets.check_secret(name, value)  # accepted ones pass alone, too
        event("refused")
        return
    event("accepted")
    folder = written(base, env)
    config = compose_config(folder)
    resolved = config["services"]
    admin, ui, redis = (secrets[k] for k in ("postgres_admin_password", "postgres_ui_password", "redis_password"))
    postgres = secret_files(folder, config, "postgres")
    assert postgres["postgres_superuser_password"] == secrets["postgres_superuser_password"].encode()
    assert (postgres["postgres_admin_password"], postgres["postgres_ui_password"]) == (admin.encode(), ui.encode())
    assert resolved["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_superuser_password"
    assert secret_files(folder, config, "redis")["redis_password"] == redis.encode()
    for service in ("api", "worker"):
        files = secret_files(folder, config, service)
        assert make_url(files["database_url_admin"].decode()).password == admin
    api = secret_files(folder, config, "api")
    assert (api["api_key"], api["app_secret_key"]) == (secrets["api_key"].encode(), secrets["app_secret_key"].encode())
    frontend = secret_files(folder, config, "frontend")
    assert frontend["better_auth_secret"] == secrets["better_auth_secret"].encode()
    assert unquote(urlsplit(frontend["database_url_ui"].decode()).password) == ui
    for service in ("api", "worker", "beat", "flower"):
        for name in ("redis_url", "celery_broker_url", "celery_result_backend"):
            assert unquote(urlsplit(secret_files(folder, config, service)[name].decode()).password) == redis
    for service in resolved.values():  # no value in any environment: the compose file names files only
        assert not set((service.get("environment") or {}).values()) & set(secrets.values())
    caddy = caddy_adapt(folder / "Caddyfile")
    [account] = [a for accounts in found(caddy, "accounts") for a in accounts]
    assert bcrypt.checkpw(secrets["flower_password"].encode(), account["password"].encode())


def test_a_secret_ending_in_a_backslash_arrives_and_hides_no_neighbour(base):
    secrets = {"api_key": "key\\", "app_secret_key": "next-one"}
    folder = written(base, load(base, secrets=secrets))
    files = secret_files(folder, compose_config(folder), "api")
    assert (files["api_key"], files["app_secret_key"]) == (b"key\\", b"next-one")


def test_a_flower_password_over_72_bytes_is_refused_by_name_not_by_bcrypt(base):
    with pytest.raises(InventoryError) as info:
        load(base, secrets={"flower_password": "p" * 100})
    [problem] = info.value.problems
    assert re.fullmatch(r"defaults\.secrets\.flower_password: the value is 100 bytes long, but bcrypt .*", problem)
    assert "ppp" not in problem


# -- rule 3: every value reaches the compose file unchanged, or is refused ----------------------------


identifier = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=20)
argv = st.lists(no_nul, min_size=1, max_size=4).filter(lambda words: words[0] != "")
server_path = st.from_regex(r"(/[A-Za-z0-9._@+-]{1,8}){1,3}", fullmatch=True)
GOOD_COMPOSE = dict(database="job_agent", admin="job_agent_admin", commands=[["run"]] * 5, health=[["true"]] * 5,
                    remote_dir="/srv/jobagent", images=["postgres:16", "redis:7", "caddy:2"])
image = st.from_regex(r"[a-z0-9]{1,6}(/[a-z0-9]{1,6})?(:[A-Za-z0-9_.-]{1,8})?", fullmatch=True)


@BOUNDED
@given(cases(database=(identifier, any_text), admin=(identifier.filter(lambda a: a not in ("job_agent_ui", "postgres")), any_text),
             commands=(st.lists(argv, min_size=5, max_size=5), st.lists(argv | any_text.map(list), min_size=5, max_size=5)),
             health=(st.lists(argv, min_size=5, max_size=5), st.lists(argv | st.just([]), min_size=5, max_size=5)),
             remote_dir=(server_path, any_text), images=(st.lists(image, min_size=3, max_size=3),
                                                         st.lists(image | any_text, min_size=3, max_size=3))))
@example({**GOOD_COMPOSE, "database": "job$agent", "admin": "${USER}", "commands": [["sh", "-c", "echo $HOME"]] * 5})
@example({**GOOD_COMPOSE, "database": "job_agent\n"})
@example({**GOOD_COMPOSE, "remote_dir": "/srv/a:b"})
@example({**GOOD_COMPOSE, "remote_dir": "/srv/$PROJECT"})
@example({**GOOD_COMPOSE, "commands": [["celery", "--pidfile=", "-A", 'a"b\\'], ["x\ny", "\t"], ["é😀\x7f"], ["$$"], ["${X:?}"]]})
def test_compose_values_arrive_unchanged_or_are_refused(base, case):
    database, admin, commands, health, remote_dir, images = (
        case[k] for k in ("database", "admin", "commands", "health", "remote_dir", "images"))

    def edit(node):
        node["postgres"] = {"database": database, "admin_role": admin}
        node["services"] = {name: {"command": commands[i], "healthcheck": health[i]}
                            for i, name in enumerate(APP_SERVICES)}
        node["remote_dir"] = remote_dir
        node["images"] = dict(zip(("postgres", "redis", "caddy"), images))

    try:
        env = load(base, edit)
    except InventoryError as exc:
        checks = [("postgres.database", _ok(inventory.parser._identifier, database)),
                  ("postgres.admin_role", _ok(inventory.parser._identifier, admin)),
                  ("remote_dir", _ok(values.server_path, remote_dir))]
        checks += [(f"services.{n}.command", _ok(values.argv, commands[i])) for i, n in enumerate(APP_SERVICES)]
        checks += [(f"services.{n}.healthcheck", _ok(values.argv, health[i])) for i, n in enumerate(APP_SERVICES)]
        checks += [(f"images.{n}", _ok(values.image, images[i])) for i, n in enumerate(("postgres", "redis", "caddy"))]
        assert any(not ok for _, ok in checks), exc.problems
        for path, ok in checks:
            assert bool(refused_at(exc, path)) != ok, (path, exc.problems)
        event("refused")
        return
    event("accepted")
    folder = written(base, env)
    resolved = compose_config(folder)["services"]
    pg, superuser = resolved["postgres"], env.postgres.superuser_role
    assert pg["environment"]["POSTGRES_DB"] == database and pg["environment"]["POSTGRES_USER"] == superuser
    assert pg["healthcheck"]["test"][-3:] == [superuser, "--dbname", database]
    url = make_url((folder / "secrets" / "database_url_admin").read_text())
    assert (url.username, url.database) == (admin, database)
    assert [v["source"] for v in pg["volumes"] if v["type"] == "bind"] == [f"{env.remote_dir}/postgres-init"]
    assert [v["source"] for v in resolved["caddy"]["volumes"] if v["type"] == "bind"] == [f"{env.remote_dir}/caddy"]
    for i, name in enumerate(APP_SERVICES):
        assert resolved[name]["command"] == commands[i]
        assert resolved[name]["healthcheck"]["test"] == ["CMD", *health[i]]
    assert [resolved[n]["image"] for n in ("postgres", "redis", "caddy")] == images


def _ok(parse, value) -> bool:
    try:
        parse(value)
        return True
    except ValueError:
        return False


# -- rule 3: every value reaches the Caddyfile unchanged, or is refused ---------------------------------


label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=2, max_size=4).map(".".join)
email = st.from_regex(r"[A-Za-z0-9._%+-]{1,10}@[A-Za-z0-9]{1,8}\.[A-Za-z]{2,6}", fullmatch=True)
flower_user = st.from_regex(r"[a-z_][a-z0-9_-]{0,12}", fullmatch=True)
GOOD_CADDY = dict(domains=["app.example.com", "api.example.com", "flower.example.com"], email="ops@example.com",
                  user="admin", read_timeout="600s", close_delay="5m")
duration = st.integers(1, 10**7).map(lambda ms: f"{ms}ms") | st.integers(1, 10**5).map(lambda s: f"{s}s")


@BOUNDED
@given(cases(domains=(st.lists(hostname, min_size=3, max_size=3, unique=True),
                      st.lists(hostname | any_text, min_size=3, max_size=3, unique=True)),
             email=(email, any_text), user=(flower_user, any_text), read_timeout=(duration, duration),
             close_delay=(duration, any_text)))
@example({**GOOD_CADDY, "email": "a{$HOME}@x.io"})
@example({**GOOD_CADDY, "email": "a#b@x.io"})
@example({**GOOD_CADDY, "email": "a}@x.io"})
@example({**GOOD_CADDY, "domains": ["app.example.com\n", "api.example.com", "flower.example.com"]})
@example({**GOOD_CADDY, "domains": ["app.example.com", "api.example.com }", "flower.example.com"]})
@example({**GOOD_CADDY, "user": "admin\n"})
@example({**GOOD_CADDY, "close_delay": "5m }"})
def test_caddyfile_values_arrive_unchanged_or_are_refused(base, case):
    domains, email, user, read_timeout, close_delay = (
        case[k] for k in ("domains", "email", "user", "read_timeout", "close_delay"))

    def edit(node):
        node["domains"] = dict(zip(("app", "api", "flower"), domains))
        node["tls"] = {"mode": "acme", "email": email}
        node["flower"] = {"user": user}
        node["sse"] = {"read_timeout": read_timeout, "heartbeat": "1ms", "stream_close_delay": close_delay}

    try:
        env = load(base, edit)
    except InventoryError as exc:
        checks = [(f"domains.{k}", _ok(values.hostname, d)) for k, d in zip(("app", "api", "flower"), domains)]
        checks += [("tls.email", _ok(values.email, email)), ("flower.user", _ok(values.unix_user, user)),
                   ("sse.stream_close_delay", _ok(values.duration, close_delay))]
        assert any(not ok for _, ok in checks) or (read_timeout == "1ms"), exc.problems
        for path, ok in checks:
            assert bool(refused_at(exc, path)) != ok, (path, exc.problems)
        event("refused")
        return
    event("accepted")
    path = base[1] / "Caddyfile"
    path.write_bytes(render.caddyfile(env))
    caddy = caddy_adapt(path)
    hosts = [h for match in found(caddy, "host") for h in match]
    # each domain is matched by several routes (its site, its http:// redirect, their error routes)
    assert set(hosts) == set(domains)
    assert {i["email"] for issuers in found(caddy, "issuers") for i in issuers} == {email}
    [account] = [a for accounts in found(caddy, "accounts") for a in accounts]
    assert account["username"] == user
    # both sites that carry streams: api. and app.'s relay of them
    assert list(found(caddy, "read_timeout")) == [values.duration(read_timeout).ms * 1_000_000] * 2
    assert list(found(caddy, "stream_close_delay")) == [values.duration(close_delay).ms * 1_000_000] * 2
