"""The Dockerfile cut into its dependency part and its code part (opskit/dockerfile.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from opskit import ROOT, dockerfile
from opskit.sources import files_read

API = (ROOT / "tests/fixtures/app/api/Dockerfile").read_text()
FRONTEND = (ROOT / "tests/fixtures/app/frontend/Dockerfile").read_text()


def test_the_api_fixture_splits_before_its_first_copy_from_the_context():
    split = dockerfile.split(API, {"PYTHON_IMAGE": "opskit/python:3.11"})
    assert split.bases == ("opskit/python:3.11",)
    assert split.context_sources == ("requirements.txt",)  # the venv's only input from the context
    assert split.dependency_dockerfile.rstrip().endswith("COPY --from=builder /opt/venv /opt/venv\nWORKDIR /app")
    assert "COPY app" not in split.dependency_dockerfile
    code = split.code_dockerfile("opskit-local/api:deps-1")
    assert "FROM opskit-local/api:deps-1\nCOPY alembic.ini ./\n" in code
    assert code.rstrip().endswith('"--forwarded-allow-ips=*"]')
    assert "COPY --from=builder /opt/venv" not in code  # the venv comes with the dependency image


def test_the_frontend_fixture_depends_on_its_package_files_only():
    split = dockerfile.split(FRONTEND, {})
    assert split.bases == ("node:20-slim",)  # the ARG's default, no build arg given
    assert split.context_sources == ("package-lock.json", "package.json")
    assert "COPY --from=deps /app/node_modules ./node_modules" in split.dependency_dockerfile
    assert "COPY prisma ./prisma" in split.code_dockerfile("x:deps-1")


NEXT = """\
# syntax=docker/dockerfile:1
ARG NODE=node:20-slim
FROM ${NODE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
FROM ${NODE} AS builder
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY . .
RUN npm run build
FROM ${NODE} AS runner
ARG PORT=3000
RUN useradd web
COPY --from=builder /app/.next/standalone ./
COPY public ./public
CMD ["node", "server.js"]
"""


def test_a_stage_that_builds_the_code_makes_the_whole_context_an_input_of_the_dependency_part():
    """Next.js's standalone shape copies the built app before its own code: the builder copies the
    whole context, so the dependency image's digest covers every file (rebuilt on any change,
    never stale)."""
    split = dockerfile.split(NEXT, {})
    assert "." in split.context_sources
    assert split.dependency_dockerfile.startswith("# syntax=docker/dockerfile:1\nARG NODE=node:20-slim\n")
    code = split.code_dockerfile("r:deps-2")
    assert code.startswith("# syntax=docker/dockerfile:1\n")  # the directive stays first
    assert "FROM r:deps-2 AS runner\nARG PORT=3000\nCOPY public ./public\n" in code


def test_copies_from_another_image_and_bind_mounts_are_inputs_too():
    text = ("FROM python:3.12 AS b\nRUN --mount=type=bind,source=req.txt,target=/r pip install -r /r\n"
            "RUN --mount=type=cache,target=/root/.cache true\n"
            "FROM debian:12\nCOPY --from=b /venv /venv\nCOPY --from=busybox:1 /bin/busybox /bin/\nCOPY app /app\n")
    split = dockerfile.split(text, {})
    assert split.bases == ("busybox:1", "debian:12", "python:3.12")
    assert split.context_sources == ("req.txt",)


def test_a_numbered_stage_and_a_stage_used_as_base_are_followed():
    text = "FROM alpine:3 AS a\nCOPY lock /lock\nFROM a AS b\nRUN true\nFROM scratch\nCOPY --from=1 /lock /\nCOPY x /x\n"
    split = dockerfile.split(text, {})
    assert split.bases == ("alpine:3",) and split.context_sources == ("lock",)


@pytest.mark.parametrize("text, reason", [
    ("# escape=`\nFROM a\nCOPY x /x\n", "escape"),
    ("FROM a\nRUN <<EOF\ntrue\nEOF\nCOPY x /x\n", "heredoc"),
    ("FROM a\nADD https://example.invalid/x.tgz /x\nCOPY x /x\n", "remote source"),
    ("FROM a\nRUN --mount=type=secret,id=k cat /run/secrets/k\nCOPY x /x\n", "type=secret"),
    ("FROM a\nONBUILD RUN true\nCOPY x /x\n", "ONBUILD"),
    ("FROM a\nRUN true\n", "copies nothing from the build context"),
    ("ARG B\nFROM ${B}\nCOPY x /x\n", "$B has no value"),
    ("RUN true\nFROM a\n", "before the first FROM"),
])
def test_what_cannot_be_read_safely_is_built_whole_and_says_why(text, reason):
    with pytest.raises(dockerfile.Unsupported, match=reason.replace("$", r"\$")):
        dockerfile.split(text, {})


def test_a_build_arg_overrides_the_global_default_and_braces_take_their_default():
    assert dockerfile.split("ARG I=a:1\nFROM $I\nCOPY x /x\n", {"I": "b:2"}).bases == ("b:2",)
    assert dockerfile.split("ARG I\nFROM ${I:-c:3}\nCOPY x /x\n", {}).bases == ("c:3",)


def test_files_read_matches_files_folders_and_globs_under_dockerignore(tmp_path):
    for rel in ("requirements.txt", "req/dev.txt", "req/prod.txt", "app/main.py", "secret.env"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / ".dockerignore").write_text("secret.env\n")
    assert files_read(tmp_path, ["requirements.txt"]) == ["requirements.txt"]
    assert files_read(tmp_path, ["./req/"]) == ["req/dev.txt", "req/prod.txt"]
    assert files_read(tmp_path, ["req/p*.txt", "*.txt"]) == ["req/prod.txt", "requirements.txt"]
    assert "secret.env" not in files_read(tmp_path, ["."]) and "app/main.py" in files_read(tmp_path, ["."])


CODE_LINES = st.lists(st.sampled_from(["COPY app /app", "RUN echo $X", "ENV A=1", "USER app", 'CMD ["x"]',
                                       "COPY --chown=1:1 a b /c/", "WORKDIR /w", "EXPOSE 80"]), max_size=6)
DEP_LINES = st.lists(st.sampled_from(["RUN apt-get update", "ARG X=1", "ENV B=2", "WORKDIR /app",
                                      "COPY --from=build /v /v", "USER root"]), max_size=6)


@settings(deadline=None)  # the run may share its CPUs with the e2e tier
@given(DEP_LINES, CODE_LINES)
def test_the_two_parts_hold_every_line_of_the_final_stage_once(dep, code):
    """Whatever the lines: the dependency part ends where the first context copy starts, the code
    part holds that copy and all after it, and only ARGs are repeated (redeclared for the code)."""
    text = "FROM python:3 AS build\nCOPY req /req\nFROM debian:12\n" + "".join(f"{l}\n" for l in dep) + \
        "COPY src /src\n" + "".join(f"{l}\n" for l in code)
    split = dockerfile.split(text, {})
    dep_final = split.dependency_dockerfile.split("FROM debian:12\n", 1)[1].splitlines()
    code_final = split.code_dockerfile("d:1").split("FROM d:1\n", 1)[1].splitlines()
    assert dep_final == dep
    assert code_final == [l for l in dep if l.startswith("ARG ")] + ["COPY src /src"] + code
    # the first stage is the dependency part's only when the final stage copies from it
    assert split.context_sources == (("req",) if "COPY --from=build /v /v" in dep else ())


def test_a_dependency_image_is_named_without_the_registry_it_never_goes_to():
    from opskit.images import local_repository
    assert local_repository("127.0.0.1:5000/jobagent/api") == "jobagent/api"
    assert local_repository("registry.example.com/team/api") == "team/api"
    assert local_repository("localhost/api") == "api"
    assert local_repository("jobagent/api") == "jobagent/api" and local_repository("api") == "api"
