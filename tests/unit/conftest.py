"""Unit fixtures: the `local` environment and its release, rendered from the real inventory."""

from __future__ import annotations

import pytest

from opskit import render


@pytest.fixture
def env(make_env):
    return make_env("local")


@pytest.fixture
def release(env):
    return render.render(env)
