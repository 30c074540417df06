"""`invoke deploy` end to end, on the simulated VPS: from nothing to a healthy stack, then the
faults: a failing import check, a failing migration, a held lock, and a rollback."""

from __future__ import annotations

import io
import json
import subprocess
import time
import urllib.request

import pytest

from opskit import ROOT, db, deploy, inventory, render, ship, smoke
from opskit.errors import DeployRefused, StepFailed
from opskit.provision.run import provision
from opskit.runner import Runner
from opskit.sim import vps
from opskit.sim.vps_config import VpsConfig
from opskit.ssh import system_ssh_argv
from opskit.steps import SERVER, Plan, Run, ShipImage
from tests.e2e.live import code_change, copy_api, edited
from tests.integration.caddy_process import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(request):
    """README's deploy command, exactly as a newcomer runs it, from nothing: no simulated VPS and no
    `.opskit/` (this checkout's keys and secrets are moved aside to build/, not deleted)."""
    config = VpsConfig.from_environment(inventory.load("local", with_secrets=False))
    vps.down(config)
    if (ROOT / ".opskit").exists():
        (ROOT / "build").mkdir(exist_ok=True)
        (ROOT / ".opskit").rename(ROOT / "build" / f"opskit-before-e2e-{int(time.time())}")
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "invoke"), "deploy"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "the simulated VPS is not ready" in output and "bringing it up and provisioning it first" in output
    assert "Traceback" not in output
    print(f"\nREADME's deploy from nothing: {time.monotonic() - started:.1f}s")
    return request.getfixturevalue("vps_session").reload()


# -- from nothing -------------------------------------------------------------------------------


def test_every_service_is_up_and_healthy(live):
    states = live.services()
    assert set(states) == {"caddy", "api", "worker", "beat", "flower", "redis", "postgres", "frontend"}
    assert {s: st for s, st in states.items() if st != ("running", "healthy")} == {}


def test_health_answers_200_over_https_through_caddy(live):
    status, headers, body = live.https(live.env.domains.api, "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    assert "server" not in headers


def test_the_api_wants_its_key(live):
    assert live.https(live.env.domains.api, "/runs/00000000-0000-0000-0000-000000000000")[0] == 401
    key = {"X-API-Key": live.env.secrets["api_key"].reveal()}
    assert live.https(live.env.domains.api, "/runs/00000000-0000-0000-0000-000000000000", key)[0] == 404


def test_an_sse_stream_through_caddy_receives_its_heartbeats(live):
    key = {"X-API-Key": live.env.secrets["api_key"].reveal()}
    result = live.keepalives("/stream/00000000-0000-0000-0000-000000000001", key)
    assert result.status == 200 and result.connected_at is not None, result
    assert len(result.keepalives) >= 2 and result.error is None, result


def test_flower_answers_401_without_credentials(live):
    assert live.https(live.env.domains.flower, "/")[0] == 401


def test_the_frontend_reads_postgres_as_the_ui_role(live):
    status, _, body = live.https(live.env.domains.app, "/api/health")
    assert status == 200, body


def test_a_redeploy_with_no_change_does_nothing(live):
    started = time.monotonic()
    outcome = live.deploy(live.env)
    assert outcome.steps == [] and outcome.bytes_shipped == 0
    assert time.monotonic() - started < 30


def test_the_smoke_suite_is_green_on_the_fresh_deploy(live):
    assert smoke.run(live.env.name, junit=ROOT / "build/smoke-results.xml") == 0


def test_a_new_render_shows_no_difference_from_what_the_server_runs(live):
    assert render.diff(render.render(live.env), deploy.current_files(live.env, live.connection)) == ""


def test_a_redeploy_of_the_current_release_repairs_what_drifted_then_does_nothing(live):
    live.out(["docker", "stop", live.container("worker")])
    live.out(["docker", "rm", "-f", live.container("beat")])
    titles = [title for title, _ in live.deploy(live.env).steps]
    repair = next(t for t in titles if t.startswith("bring back"))
    assert "beat: no container" in repair and "worker: exited" in repair, titles
    assert not any(t.startswith(("build", "ship", "upload", "migrate", "mark")) for t in titles), titles
    assert all(st == ("running", "healthy") for st in live.services().values()), live.services()
    assert live.deploy(live.env).steps == []


def _server_images(live) -> set:
    repos = " ".join(sorted({b.repository for b in live.env.builds.values()}))
    listed = live.out(["sh", "-c", f"for r in {repos}; do docker image ls --format '{{{{.Repository}}}}:{{{{.Tag}}}}' "
                                   "\"$r\"; done"])
    return set(listed.split())


def _kept_images(live) -> set:
    named = live.out(["sh", "-c", f"for f in {live.layout.releases}/*/docker-compose.yml; do "
                                  "docker compose -f \"$f\" config --images; done"])
    repos = tuple(f"{b.repository}:" for b in live.env.builds.values())
    return {ref for ref in named.split() if ref.startswith(repos)}


def test_a_code_only_change_ships_only_code_layers_and_the_server_keeps_only_kept_images(live, tmp_path):
    # the first change builds the dependency image if this machine lacks it (a warm one has the
    # final image of the current sources, so the deploy from nothing built nothing)
    live.deploy(code_change(tmp_path / "1"))
    progress = io.StringIO()
    outcome = live.deploy(code_change(tmp_path / "2"), out=progress)
    titles = [title for title, _ in outcome.steps]
    # the same migrations: the database's alembic_version is read, no upgrade container runs
    assert db.AT_HEAD in progress.getvalue() and "alembic.runtime.migration" not in progress.getvalue()
    assert any(t.startswith("build api image") and "(code layers, no cache, on jobagent/api:deps-" in t
               for t in titles), titles
    assert not any("dependency image" in t for t in titles), titles  # the venv's image was there: reused
    assert 0 < outcome.bytes_shipped < 200_000, outcome.bytes_shipped  # the code layers, not the venv
    assert _server_images(live) == _kept_images(live)
    live.deploy(live.env)  # the other tests expect the current sources
    assert _server_images(live) == _kept_images(live)


def test_an_image_that_leaves_less_than_the_margin_free_is_not_loaded(live, tmp_path):
    image = "opskit-test/roomy:1"
    (tmp_path / "Dockerfile").write_text("FROM opskit/base:bookworm\nRUN head -c 402653184 /dev/urandom > /blob\n")
    subprocess.run(["docker", "build", "-q", "-t", image, str(tmp_path)], check=True, capture_output=True)
    live.run(["docker", "image", "rm", "--force", image], check=False)  # an earlier run's, had it got through
    root, free_kb = live.out(ship.FREE_SPACE).split()
    # the margin alone fits, with the new 384 MB layer it does not. The disk is this machine's, which
    # the other tiers use meanwhile: what they fill only makes the refusal surer, and they would have
    # to free 320 MB between the two reads to let the image through
    margin = int(free_kb) // 1024 - 64
    with pytest.raises(StepFailed, match=f"not enough room on the server for {image}: .* under {root}, its new "
                                         f"layers take 38[45] MB and {margin} MB must stay free"):
        Runner(live.connection).run(Plan("ship", [ShipImage("ship it", image, deploy.gather(live.env, live.connection)
                                                            .layers, margin_mb=margin)]))
    assert live.run(["docker", "image", "inspect", image], check=False).returncode != 0  # nothing was loaded
    subprocess.run(["docker", "image", "rm", image], capture_output=True)


# -- faults ---------------------------------------------------------------------------------------


def failed_deploy_of_api(live, tmp_path, change) -> tuple[dict, StepFailed]:
    """Deploy a copy of the API's context after `change(folder)`; the snapshot before, and the failure."""
    api = copy_api(tmp_path)
    change(api)
    before = live.snapshot()
    with pytest.raises(StepFailed) as info:
        live.deploy(edited(lambda raw: raw["defaults"]["builds"]["api"].update(context=str(api))))
    return before, info


def without_uvicorn(api) -> None:
    # uvicorn: one the image's own build-time check does not cover, so only the deploy's catches it
    requirements = api / "requirements.txt"
    requirements.write_text("".join(line for line in requirements.read_text().splitlines(True)
                                    if not line.startswith("uvicorn")))


def with_a_broken_migration(api) -> None:
    (api / "migrations/versions/0003_broken.py").write_text(
        'revision = "0003"\ndown_revision = "0002"\nbranch_labels = None\ndepends_on = None\n\n\n'
        "def upgrade():\n    from alembic import op\n\n    op.execute('SELECT no_such_column FROM runs')\n\n\n"
        "def downgrade():\n    pass\n")


def test_a_failing_import_check_stops_the_deploy_before_the_server_is_touched(live, tmp_path):
    before, info = failed_deploy_of_api(live, tmp_path, without_uvicorn)
    assert info.value.step.title.startswith("import checks of api")
    assert "import check failed: uvicorn: ModuleNotFoundError: No module named 'uvicorn'" in str(info.value)
    assert live.snapshot() == before  # same release, same containers, no lock


def test_a_failing_migration_stops_the_deploy_and_the_previous_release_serves(live, tmp_path):
    before, info = failed_deploy_of_api(live, tmp_path, with_a_broken_migration)
    assert info.value.step.title.startswith("migrate")
    assert "no_such_column" in str(info.value)
    after = live.snapshot()
    assert after["current"] == before["current"] and after["lock"] == ""
    assert after["containers"]["api"] == before["containers"]["api"]
    assert live.https(live.env.domains.api, "/health")[0] == 200


def test_a_second_deploy_is_refused_while_the_lock_is_held(live):
    lock = live.layout.lock
    info = json.dumps({"holder": "ci@release-runner", "since": int(time.time()), "release": "abc"})
    live.out(["sh", "-c", f"mkdir {lock} && printf '%s' '{info}' > {live.layout.lock_info}"])
    try:
        with pytest.raises(DeployRefused, match="lock held by ci@release-runner"):
            live.deploy(edited(lambda raw: raw["defaults"]["sse"].update(read_timeout="601s")))
    finally:
        live.out(["rm", "-rf", lock])


def test_rollback_restores_the_previous_release_and_it_is_healthy(live):
    first = live.snapshot()["current"]
    changed = edited(lambda raw: raw["defaults"]["sse"].update(read_timeout="601s"))
    second = live.deploy(changed).release
    assert live.snapshot()["current"] == second != first
    assert deploy.rollback(live.env, live.connection, Runner(live.connection)) == first
    assert live.snapshot()["current"] == first
    assert all(st == ("running", "healthy") for st in live.services().values())
    assert live.https(live.env.domains.api, "/health")[0] == 200


# -- with a registry ----------------------------------------------------------------------------

REGISTRY_IMAGE = "opskit-test/registry:2"
REGISTRY_CONFIG = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\nhttp:\n  addr: :5000\n"
REGISTRY_DOCKERFILE = """\
FROM opskit/base:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends docker-registry && rm -rf /var/lib/apt/lists/*
# Debian's config asks for htpasswd logins; this test registry is reached only through the tunnel
COPY config.yml /etc/docker/registry/config.yml
EXPOSE 5000
CMD ["docker-registry", "serve", "/etc/docker/registry/config.yml"]
"""


@pytest.fixture
def registry(live, tmp_path):
    """Debian's registry, run inside the VPS and reached from here through an SSH tunnel, so that
    `127.0.0.1:PORT` names the same registry on both sides (as a real registry's name would). The
    server's sshd lets the tunnel through once provisioning knows of that registry."""
    port = free_port()
    with_registry = edited(lambda raw: raw["environments"]["local"].update(registry=f"127.0.0.1:{port}/jobagent"))
    provision(with_registry)
    (tmp_path / "Dockerfile").write_text(REGISTRY_DOCKERFILE)
    (tmp_path / "config.yml").write_text(REGISTRY_CONFIG)
    subprocess.run(["docker", "build", "-q", "-t", REGISTRY_IMAGE, str(tmp_path)], check=True, capture_output=True)
    Runner(live.connection).run(Plan("registry", [
        ShipImage("ship the test registry", REGISTRY_IMAGE, deploy.gather(live.env, live.connection).layers),
        Run("start it", ["docker", "run", "-d", "--name", "opskit-test-registry", "-p",
                         f"127.0.0.1:{port}:5000", REGISTRY_IMAGE], on=SERVER)]))
    tunnel = subprocess.Popen(system_ssh_argv(live.env.ssh, "-N", "-L", f"127.0.0.1:{port}:127.0.0.1:{port}"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield f"127.0.0.1:{port}/jobagent"
    finally:
        tunnel.terminate()
        tunnel.wait(10)
        live.out(["docker", "rm", "-f", "opskit-test-registry"])
        provision(live.env)  # the tunnel's end closed again


def test_with_a_registry_the_built_images_are_pushed_and_pulled(live, registry):
    before = live.snapshot()["current"]
    env = edited(lambda raw: raw["environments"]["local"].update(registry=registry))
    outcome = live.deploy(env)
    titles = [title for title, _ in outcome.steps]
    for build in ("api", "frontend"):
        image = outcome.images[build]
        assert image.startswith(f"{registry}/{build}:")
        assert f"push {image}" in titles and f"pull {image} from the registry" in titles
        assert f"ship {image}" not in titles
        digests = live.out(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", image])
        assert f"{registry}/{build}@sha256:" in digests  # it came from the registry
    assert all(st == ("running", "healthy") for st in live.services().values())
    deploy.rollback(live.env, live.connection, Runner(live.connection), to=before)  # what the other tests expect
