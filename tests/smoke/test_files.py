"""The release on disk: `current` points at a whole release, its secret files are the deploy
user's in folders closed to others, the files are what the deploy wrote, and no secret value is
anywhere else: not in a config file, not in the release outside its secret files, not in
`docker inspect` of a container, not in a process's argv (those compared by hashes, on the server:
tests/smoke/secret_scan.py)."""

from __future__ import annotations

import posixpath

import pytest

from opskit import smoke
from opskit.facts.release import secrets_in
from opskit.layout import COMPOSE_FILE, Layout

from . import secret_scan
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


def _stat(release, path):
    """A path's stat, from the one `stat` of the release (fast: no command per file)."""
    st = release.stats.get(path)
    assert st is not None, problem(f"{path} is missing", f"ls -l {posixpath.dirname(path)}/")
    return st


# Secret files are 0444: Compose bind-mounts each into the containers that use it, and those run
# as other uids (render.SECRETS_DIR_MODE says why). The folders are what keep everyone else out.
def test_secret_file_mode_0444_and_owned_by_deploy_user(secret_file, release, env):
    path = f"{release.path}/secrets/{secret_file}"
    st = _stat(release, path)
    assert (st.mode, st.user) == (0o444, env.ssh.user), problem(
        f"{path} is {st.octal} {st.user}, not 0444 {env.ssh.user}: a deploy did not write it (edited by hand?)",
        f"ls -l {path}  (fix: deploy again)")


def test_installed_secret_file_is_the_release_one(secret_file, release, manifest, layout, host, env):
    path = f"{layout.secrets}/{secret_file}"
    st = _stat(release, path)
    assert (st.mode, st.user) == (0o444, env.ssh.user), problem(
        f"{path} is {st.octal} {st.user}, not 0444 {env.ssh.user}", f"ls -l {path}  (fix: deploy again)")
    want = manifest.get("files", {}).get(f"secrets/{secret_file}")
    assert want and host.file(path).sha256sum == want, problem(
        f"{path}, which the containers mount, differs from the current release's secrets/{secret_file}: "
        "the containers may run with another value", f"sha256sum {path} {release.path}/secrets/{secret_file}")


@pytest.mark.parametrize("which", ["release", "installed"])
def test_secrets_folder_closed_to_others(which, release, env, layout):
    folder = f"{release.path}/secrets" if which == "release" else layout.secrets
    st = _stat(release, folder)
    assert st.mode & 0o077 == 0 and st.user == env.ssh.user, problem(
        f"{folder} is {st.octal} {st.user}:{st.group}: other users may enter it and read the 0444 secret files",
        f"ls -ld {folder}  (fix: chmod 700 {folder})")


def test_release_has_exactly_the_expected_secret_files(manifest, env):
    listed = {p[len("secrets/"):] for p in manifest.get("files", {}) if p.startswith("secrets/")}
    want = set(smoke.secret_files(env))
    old = sorted(p for p in manifest.get("files", {}) if p.startswith("env/"))
    assert listed == want and not old, problem(
        f"release {manifest.get('release')} has secret files {listing(sorted(listed))}, expected "
        f"{listing(sorted(want))}" + (f", and env files {listing(old)}" if old else ""),
        f"ls -l {Layout(env.remote_dir).current}/secrets/")


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
        f"{path} contains the value of secret(s) {', '.join(found)}: secrets belong in secrets/ only; "
        "rotate them", f"ls -l {path}")


@pytest.fixture(scope="session")
def exposure(remote, env, release, layout):
    """One scan on the server of what must hold no secret value: every container's `docker
    inspect`, the process list, and the release and shared config folders outside `secrets/`."""
    return secret_scan.scan(remote, env, [
        secret_scan.inspect(env.project), secret_scan.processes(),
        secret_scan.files([release.path, layout.caddy, layout.postgres_init], skip=["secrets"])])


def _leak_hint(layout, hits, show: str) -> str:
    """A command that counts (never shows) the lines holding each plain value found."""
    names = sorted({h.secret for h in hits if h.secret != "flower_password"})  # no file holds it plain
    return "; ".join(f"{show} | grep -c -F -f {layout.secrets}/{n}" for n in names) or show


def _of(service, hits, env):
    """The hits of `service`; a container of a service the release does not have counts as the
    first service's, so no container goes unchecked."""
    known = smoke.expected_services(env)
    return [h for h in hits if h.service == service or (service == known[0] and h.service not in known)]


def test_no_secret_in_docker_inspect(service, exposure, layout, env):
    hits = _of(service, [h for h in exposure.hits if "|" in h.where], env)
    assert exposure.counts["sources"] > 0, problem("the secret scan read nothing on the server")
    containers = sorted({h.container for h in hits})
    assert not hits, problem(
        f"`docker inspect` of {listing(containers)} shows secret(s) {listing(sorted({h.secret for h in hits}))} "
        f"({listing(sorted({h.form for h in hits}))}): in its environment, command or labels; secrets "
        "belong in /run/secrets files only. Rotate them",
        _leak_hint(layout, hits, f"docker inspect {containers[0] if containers else service}"))


def test_no_secret_in_a_process_argv(exposure, layout):
    hits = [h for h in exposure.hits if h.where == "process list"]
    assert not hits, problem(
        f"a process on the server has secret(s) {listing(sorted({h.secret for h in hits}))} in its argv "
        "(visible to every user with ps). Rotate them", _leak_hint(layout, hits, "ps -eww -o args"))


def test_no_secret_in_the_release_outside_its_secret_files(exposure, layout):
    hits = [h for h in exposure.hits if "|" not in h.where and h.where != "process list"]
    assert not exposure.unreadable, problem(f"the secret scan could not read {listing(exposure.unreadable)}")
    paths = sorted({h.where for h in hits})
    assert not hits, problem(
        f"{listing(paths)} hold(s) secret(s) {listing(sorted({h.secret for h in hits}))}: secrets belong in "
        "secrets/ only. Rotate them", _leak_hint(layout, hits, f"cat {paths[0] if paths else ''}"))
