"""The release on disk: `current` points at a whole release, env files are 0600 and the deploy
user's, the files are what the deploy wrote, and no secret sits in a config file."""

from __future__ import annotations

import posixpath

import pytest

from opskit import smoke
from opskit.facts.release import secrets_in
from opskit.layout import COMPOSE_FILE, Layout

from .checks import listing, problem

pytestmark = pytest.mark.files


def test_current_release_is_linked(host, release, manifest, layout):
    current = host.file(layout.current)
    assert current.is_symlink, problem(f"{layout.current} is not a symlink to a release", f"ls -l {layout.root}")
    releases = posixpath.relpath(layout.releases, layout.root) + "/"
    assert release.link.startswith(releases), problem(
        f"{layout.current} points at {release.link}, outside {layout.releases}/")
    assert manifest.get("release") == release.id, problem(
        f"release folder {release.id} holds the manifest of release {manifest.get('release')}",
        f"cat {layout.current}/manifest.json")


def test_no_deploy_lock_left_behind(host, release, layout):
    lock = host.file(layout.lock)
    assert not lock.exists, problem(
        f"{layout.lock} is held ({release.lock or 'no info'}): a deploy runs, or one died; "
        "the next deploy will wait for it", f"cat {layout.lock_info}")


def _env_file(release, env, service):
    """The env file's stat, from the one `stat` of the release (fast: no command per file)."""
    path = f"{release.path}/env/{service}.env"
    st = release.stats.get(path)
    assert st is not None, problem(f"{path} is missing", f"ls -l {release.path}/env/")
    return path, st


def test_env_file_mode_0600(env_file_service, release, env):
    path, st = _env_file(release, env, env_file_service)
    assert st.mode == 0o600, problem(f"{path} has mode {st.octal}, not 0600: other users can read its secrets",
                                     f"ls -l {path}  (fix: chmod 600 {path})")


def test_env_file_owned_by_deploy_user(env_file_service, release, env):
    path, st = _env_file(release, env, env_file_service)
    assert st.user == env.ssh.user, problem(f"{path} is owned by {st.user}, not the deploy user {env.ssh.user}",
                                            f"ls -l {path}")


def test_release_has_exactly_the_expected_env_files(manifest, env):
    listed = {posixpath.basename(p)[:-4] for p in manifest.get("files", {}) if p.startswith("env/") and p.endswith(".env")}
    want = set(smoke.env_file_services(env))
    assert listed == want, problem(
        f"release {manifest.get('release')} has env files for {listing(sorted(listed))}, expected {listing(sorted(want))}",
        f"ls -l {Layout(env.remote_dir).current}/env/")


def test_env_folder_closed_to_others(release, env):
    folder = f"{release.path}/env"
    st = release.stats.get(folder)
    assert st is not None, problem(f"{folder} is missing", f"ls -ld {folder}")
    assert st.mode & 0o007 == 0 and st.user == env.ssh.user, problem(
        f"{folder} is {st.octal} {st.user}:{st.group}: other users may list or enter it", f"ls -ld {folder}")


def test_release_files_unchanged_since_deploy(release, manifest, env):
    want = {p: h for p, h in manifest.get("files", {}).items() if p != "manifest.json"}
    changed = sorted(p for p, h in want.items() if release.sha256.get(p) != h)
    added = sorted(set(release.sha256) - set(want))
    assert not changed and not added, problem(
        f"release {manifest.get('release')} on the server differs from its manifest: "
        + "; ".join(([f"changed or missing: {listing(changed)}"] if changed else [])
                    + ([f"not in the manifest: {listing(added)}"] if added else []))
        + " (edited by hand? deploy again to restore it)",
        f"cd {Layout(env.remote_dir).current} && sha256sum -c <(jq -r '.files|to_entries[]|\"\\(.value)  \\(.key)\"' manifest.json)")


CONFIG_FILES = {
    "compose_file": lambda layout: posixpath.join(layout.current, COMPOSE_FILE),
    "caddyfile": lambda layout: posixpath.join(layout.current, "Caddyfile"),
    "live_caddyfile": lambda layout: posixpath.join(layout.caddy, "Caddyfile"),
}


@pytest.mark.parametrize("which", list(CONFIG_FILES))
def test_no_secret_in_config_file(which, release, env, layout):
    path = CONFIG_FILES[which](layout)
    text = getattr(release, which)
    assert text.strip(), problem(f"{path} is empty or unreadable", f"ls -l {path}")
    found = secrets_in(text, env.secrets)
    assert not found, problem(
        f"{path} contains the value of secret(s) {', '.join(found)}: secrets belong in env/*.env (mode 0600) only; "
        "rotate them", f"ls -l {path}")
