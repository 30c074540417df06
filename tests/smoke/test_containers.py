"""Every service of the current release: running, healthy, restarting on its own, on the images
and config of this release, with rotated logs, and not crash-looping."""

from __future__ import annotations

import pytest

from opskit import smoke

from .checks import listing, problem, run_last

pytestmark = pytest.mark.containers


def _container(docker, service, server):
    c = docker.one(service)
    assert c is not None, problem(f"{service}: no container of the project at all",
                                  server.compose_hint("ps", "-a"))
    return c


def test_every_release_service_has_one_container(docker, manifest, env, server):
    expected = set(manifest.get("images", {})) or set(smoke.expected_services(env))
    running = {}
    for c in docker.containers:
        running.setdefault(c.service, []).append(c.name)
    missing = sorted(expected - set(running))
    orphans = sorted(set(running) - expected)
    doubled = sorted(f"{s} ({', '.join(n)})" for s, n in running.items() if len(n) > 1)
    problems = ([f"no container for {listing(missing)}"] if missing else []) \
        + ([f"containers of services the release does not have: {listing(orphans)}"] if orphans else []) \
        + ([f"more than one container for {listing(doubled)}"] if doubled else [])
    assert not problems, problem("; ".join(problems), server.compose_hint("ps", "-a"))


def test_service_running(service, docker, server):
    c = _container(docker, service, server)
    assert c.is_running, problem(
        f"{service} ({c.name}) is {c.status}, exit code {c.exit_code}"
        + (" (killed: out of memory)" if c.oom_killed else ""),
        server.compose_hint("logs", "--tail", "100", service))


def test_service_healthy(service, docker, server):
    c = _container(docker, service, server)
    assert c.health == "healthy", problem(
        f"{service} ({c.name}) health is {c.health or 'not reported (no healthcheck)'} while {c.status}",
        f"docker inspect --format '{{{{json .State.Health}}}}' {c.name}")


def test_service_restarts_unless_stopped(service, docker, server):
    c = _container(docker, service, server)
    assert c.restart_policy == "unless-stopped", problem(
        f"{service} ({c.name}) has restart policy {c.restart_policy or 'none'!r}, not 'unless-stopped': "
        "it will stay down after a crash or a reboot", f"docker inspect --format '{{{{.HostConfig.RestartPolicy}}}}' {c.name}")


def test_service_runs_release_image(service, docker, manifest, server):
    c = _container(docker, service, server)
    want_ref = manifest.get("images", {}).get(service)
    assert want_ref, problem(f"the manifest of release {manifest.get('release')} names no image for {service}")
    assert c.image_ref == want_ref, problem(
        f"{service} ({c.name}) was created from {c.image_ref}, but release {manifest.get('release')} runs {want_ref}",
        server.compose_hint("ps", service))
    want_id = docker.images.get(want_ref)
    assert want_id, problem(f"{want_ref} (the release's image for {service}) is not on the server",
                            "docker image ls")
    assert c.image_id == want_id, problem(
        f"{service} ({c.name}) runs a stale image {c.image_id[7:19]}: {want_ref} is now {want_id[7:19]} "
        "(the container was not recreated after the image changed)",
        f"docker image inspect --format '{{{{.Id}}}} {{{{.Created}}}}' {want_ref} {c.image_id[7:19]}")


def test_service_config_matches_release(service, docker, compose_plan, manifest, server):
    c = _container(docker, service, server)
    assert compose_plan.actions, problem(f"`docker compose --dry-run up` gave no plan: {compose_plan.output[-300:]}",
                                         server.release_compose_hint("--dry-run", "up", "--no-build", "-d"))
    action = compose_plan.actions.get(c.name)
    assert action == "Running", problem(
        f"{service} ({c.name}) is not what release {manifest.get('release')}'s compose file describes: "
        f"`compose up` would {(action or 'not touch').lower()} it ("
        + (f"it is {c.status})" if not c.is_running else "its config or image changed since it was created)"),
        server.release_compose_hint("--dry-run", "up", "--no-build", "-d", service))


def test_service_log_rotation(service, docker, env, server):
    c = _container(docker, service, server)
    want = {"max-size": env.logging.max_size, "max-file": str(env.logging.max_files)}
    got = {k: c.log_options.get(k) for k in want}
    assert c.log_driver in ("json-file", "local") and got == want, problem(
        f"{service} ({c.name}) logs with {c.log_driver} {got}, the inventory's logging wants {c.log_driver if c.log_driver in ('json-file', 'local') else 'json-file'} {want}: "
        "unrotated logs fill the disk", f"docker inspect --format '{{{{json .HostConfig.LogConfig}}}}' {c.name}")


def test_service_restart_count_below_limit(service, docker, env, server):
    c = _container(docker, service, server)
    limit = env.smoke.max_restarts
    assert c.restart_count <= limit and not c.oom_killed, problem(
        f"{service} ({c.name}) restarted {c.restart_count} times (limit: smoke.max_restarts = {limit})"
        + ("; last exit: killed, out of memory" if c.oom_killed else ""),
        server.compose_hint("logs", "--tail", "200", service))


@run_last
def test_restart_counts_not_climbing(docker, remote, env, server):
    """Sampled again at the end of the run: a crash loop shows as a count that moved meanwhile."""
    before = {c.id: c for c in docker.containers}
    ids = list(before)
    if not ids:
        pytest.fail(problem("no container to sample", server.compose_hint("ps", "-a")))
    done = remote.run(["docker", "inspect", "--format", "{{.Id}} {{.RestartCount}} {{.State.Status}}", *ids],
                      timeout=30)
    climbing = []
    for line in done.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in before:
            c = before[parts[0]]
            if int(parts[1]) > c.restart_count or (parts[2] == "restarting"):
                climbing.append(f"{c.service} ({c.restart_count} -> {parts[1]}, {parts[2]})")
    assert not climbing, problem(f"restart counts climbing during the run: {listing(climbing)}",
                                 server.compose_hint("ps", "-a"))
