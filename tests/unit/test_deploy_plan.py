"""The deploy plan as data: what it does, in which order, and what it leaves out, for given facts."""

from __future__ import annotations

import dataclasses

import pytest

from opskit import ROOT, deploy, dockerfile, hardening, images, lock, render
from opskit.images import LocalImage
from opskit.facts import Lock, ServerFacts, parse_deploy
from opskit.facts.docker import Container
from opskit.ship import chain_ids
from opskit.steps import Beside, Phase, Run, ShipImage, WriteFile

FRESH = ServerFacts(docker="26.1.5", compose="2.26.1", disk_free_mb=50_000, current=None, now=1_000_000.0)


REPLACE = ("replace the services side by side: api, frontend start-first; worker overlapped; "
           "beat stop-first on its own; the others in one up")


def titles(plan):
    return [s.title for s in plan]


def plan_for(env, release, facts=FRESH, local=None, **options):
    return deploy.plan_deploy(env, release, facts, local or {}, "abc123", deploy.Options(**options))


def test_a_first_deploy_builds_checks_ships_uploads_then_starts_in_order(env, release):
    plan = plan_for(env, release)
    t = titles(plan)
    order = ["build api", "import checks of api", "tag api", "build frontend", "import checks of frontend",
             "prisma guard", "take the deploy lock", "ship ", "prepare release folder", "upload docker-compose.yml",
             "complete release folder", "install the config", "start postgres and redis", "roles ",
             "migrate: alembic upgrade head", REPLACE,
             "reload caddy", f"mark {release.id} current",
             "release the deploy lock"]
    positions = [next(i for i, title in enumerate(t) if title.startswith(prefix)) for prefix in order]
    assert positions == sorted(positions), t


def test_builds_use_no_cache_and_label_the_revision(env, release):
    build = next(s for s in plan_for(env, release) if s.title.startswith("build api"))
    assert build.argv[:4] == ("docker", "buildx", "build", "--no-cache")
    assert "org.opencontainers.image.revision=abc123" in build.argv
    assert build.argv[build.argv.index("--tag") + 1] == "jobagent/api:unchecked-" + release.images["api"].split(":")[1]
    assert f"opskit.build.digest={release.builds['api']['context_digest']}" in build.argv
    assert "--pull" not in build.argv  # local bases come from the offline kit, not a registry


def test_only_a_checked_image_gets_its_real_tags(env, release):
    plan = plan_for(env, release)
    t = titles(plan)
    assert t.index("tag api image " + release.images["api"] + " (checked)") > next(
        i for i, title in enumerate(t) if title.startswith("import checks of api"))
    promote = next(s for s in plan if s.title.startswith("tag api"))
    script = promote.argv[-1]
    for tag in (release.images["api"], "jobagent/api:abc123", f"jobagent/api:release-{release.id}"):
        assert f"docker tag jobagent/api:unchecked-{release.images['api'].split(':')[1]} {tag}" in script


def test_import_checks_run_every_listed_module_without_network(env, release):
    check = next(s for s in plan_for(env, release) if s.title.startswith("import checks of api"))
    assert check.argv[:5] == ("docker", "run", "--rm", "--network", "none")
    assert check.argv[-len(env.builds["api"].import_checks):] == env.builds["api"].import_checks
    assert "alembic.config:Config" in check.argv


def _layered(env, name="api", digest="d" * 64):
    build = env.builds[name]  # the test's context is a stub: the fixture app's Dockerfile is split
    split = dockerfile.split((ROOT / "tests/fixtures/app" / name / "Dockerfile").read_text(), dict(build.args))
    return images.Layered(f"{build.repository}:deps-{digest[:20]}", digest, split)


def test_a_layered_build_builds_its_dependency_image_once_and_the_code_on_it_every_time(env, release):
    layered = _layered(env)
    plan = deploy.plan_deploy(env, release, FRESH, {}, "abc", deploy.Options(), {"api": layered})
    deps, code = (next(s for s in plan if s.title.startswith(p)) for p in ("build api dependency", "build api image"))
    assert titles(plan).index(deps.title) < titles(plan).index(code.title)
    assert deps.argv[:4] == code.argv[:4] == ("docker", "buildx", "build", "--no-cache")
    assert deps.argv[deps.argv.index("--tag") + 1] == layered.image
    assert f"opskit.dependency.digest={layered.digest}" in deps.argv and deps.stdin == layered.split.dependency_dockerfile.encode()
    assert code.argv[code.argv.index("--file") + 1] == "-" and b"FROM " + layered.image.encode() in code.stdin
    assert "--pull" not in deps.argv + code.argv  # the digest names the base this machine has
    have = {layered.image: LocalImage("sha256:d", {"opskit.dependency.digest": layered.digest})}
    again = titles(deploy.plan_deploy(env, release, FRESH, have, "abc", deploy.Options(), {"api": layered}))
    assert not any(t.startswith("build api dependency") for t in again) and any(t.startswith("build api image") for t in again)
    rebuilt = titles(deploy.plan_deploy(env, release, FRESH, have, "abc", deploy.Options(rebuild=True), {"api": layered}))
    assert any(t.startswith("build api dependency") for t in rebuilt)


def test_a_dependency_image_whose_label_disagrees_with_its_name_is_built_again(env, release):
    layered = _layered(env)
    have = {layered.image: LocalImage("sha256:d", {"opskit.dependency.digest": "e" * 64})}
    plan = deploy.plan_deploy(env, release, FRESH, have, "abc", deploy.Options(), {"api": layered})
    assert any(t.startswith("build api dependency") for t in titles(plan))


def test_a_build_that_cannot_be_split_is_built_whole(env, release):
    plan = deploy.plan_deploy(env, release, FRESH, {}, "abc", deploy.Options(), {"api": "Dockerfile: a heredoc"})
    build = next(s for s in plan if s.title.startswith("build api"))
    assert build.title.endswith("(no cache)") and build.stdin is None and "--file" in build.argv


def test_images_whose_inputs_are_unchanged_are_not_rebuilt(env, release):
    local = {b["image"]: LocalImage("sha256:x", {"opskit.build.digest": b["context_digest"]})
             for b in release.builds.values()}
    assert not any(t.startswith("build") for t in titles(plan_for(env, release, local=local)))
    assert any(t.startswith("build") for t in titles(plan_for(env, release, local=local, rebuild=True)))


def test_only_images_the_server_lacks_are_shipped_minus_its_layers(env, release):
    facts = ServerFacts(**{**FRESH.__dict__, "images": frozenset({release.images["postgres"]}),
                           "layers": frozenset({"sha256:base"})})
    ships = [s for s in plan_for(env, release, facts) if isinstance(s, ShipImage)]
    assert {s.image for s in ships} == set(release.images.values()) - {release.images["postgres"]}
    assert all(s.skip == {"sha256:base"} for s in ships)


def test_the_ship_runs_beside_the_folder_config_and_stores_when_the_stores_images_are_there(env, release):
    stores = {release.images["postgres"], release.images["redis"]}
    plan = plan_for(env, release, ServerFacts(**{**FRESH.__dict__, "images": frozenset(stores)}))
    [beside] = [s for s in plan.steps if isinstance(s, Beside)]
    ships, rest = beside.branches
    assert all(isinstance(s, ShipImage) for s in ships)
    assert {s.image for s in ships} == set(release.images.values()) - stores
    assert [s.title.split(" ")[0] for s in rest][0] == "prepare" and [s.title for s in rest][-2:] == [
        "start postgres and redis", next(s.title for s in rest if s.title.startswith("roles "))]
    after = [s.title for s in plan.steps[plan.steps.index(beside) + 1:]]
    assert after[0].startswith("migrate: alembic upgrade head")  # the migration runs the new API image: after it
    # a release whose stores' image is still to come ships it first, then starts them
    plan = plan_for(env, release, ServerFacts(**{**FRESH.__dict__, "images": frozenset({release.images["redis"]})}))
    assert not any(isinstance(s, Beside) for s in plan.steps)
    t = titles(plan)
    assert t.index(f"ship {release.images['postgres']}") < t.index("start postgres and redis")


def test_official_images_are_pulled_when_the_environment_does_not_ship_them(make_env):
    env = make_env("production")
    plan = plan_for(env, render.render(env))
    assert [s.argv for s in plan if s.title.startswith("pull")] == [
        ("docker", "pull", "caddy:2"), ("docker", "pull", "postgres:16"), ("docker", "pull", "redis:7")]
    assert "--pull" in next(s for s in plan if s.title.startswith("build api")).argv


def test_with_a_registry_built_images_are_pushed_here_and_pulled_there(make_env):
    env = make_env("production", lambda raw: raw["environments"]["production"].update(
        registry="registry.example.com/team"))
    release = render.render(env)
    assert release.images["api"].startswith("registry.example.com/team/api:")
    plan = plan_for(env, release)
    moves = [(s.title.split(" ")[0], s.on, s.argv) for s in plan if s.title.startswith(("push", "pull"))]
    api = release.images["api"]
    assert ("push", "local", ("docker", "push", api)) in moves
    assert ("pull", "server", ("docker", "pull", api)) in moves
    assert not [s for s in plan if isinstance(s, ShipImage)]


def test_a_registry_must_name_a_host_and_a_namespace(make_env):
    from opskit.errors import InventoryError

    with pytest.raises(InventoryError, match="environments.production.registry: 'team' is not a registry namespace"):
        make_env("production", lambda raw: raw["environments"]["production"].update(registry="team"))


def test_secret_files_are_uploaded_into_a_closed_folder_and_their_content_never_prints(env, release):
    plan = plan_for(env, release)
    uploads = {s.path.rsplit("/", 1)[-1]: s for s in plan if isinstance(s, WriteFile)}
    assert uploads["api_key"].mode == 0o444 and uploads["docker-compose.yml"].mode == 0o644
    printed = plan.render()
    for secret in env.secrets.values():
        assert secret.reveal() not in printed
    assert "secret content" in uploads["api_key"].describe()
    prepare = next(s for s in plan if s.title.startswith("prepare release folder")).argv[-1]
    assert prepare.endswith(f"&& chmod 700 {env.remote_dir}/releases/{release.id}.partial/secrets")


def test_secret_files_are_installed_by_rename_into_the_shared_closed_folder(env, release):
    install = next(s for s in plan_for(env, release) if s.title.startswith("install the config")).argv[-1]
    assert f"mkdir -p -m 0700 {env.remote_dir}/secrets; chmod 0700 {env.remote_dir}/secrets" in install
    assert 'mv -f /srv/jobagent/secrets/."$n".new /srv/jobagent/secrets/"$n"'.replace("/srv/jobagent", env.remote_dir) in install


def test_the_release_is_uploaded_beside_its_final_folder_then_renamed(env, release):
    plan = plan_for(env, release)
    final = f"{env.remote_dir}/releases/{release.id}"
    assert all(s.path.startswith(final + ".partial/") for s in plan if isinstance(s, WriteFile))
    assert next(s for s in plan if s.title.startswith("complete")).argv == ("mv", "-T", "--", final + ".partial", final)


def test_roles_passwords_travel_on_stdin_only(env, release):
    roles = next(s for s in plan_for(env, release) if s.title.startswith("roles "))
    assert all(secret.reveal() not in " ".join(map(str, roles.argv)) for secret in env.secrets.values())
    assert str(roles.stdin) == "***"


def test_migrations_run_in_the_new_release_before_the_full_start(env, release):
    plan = plan_for(env, release)
    migrate = next(s for s in plan if s.title.startswith("migrate"))
    assert f"{env.remote_dir}/releases/{release.id}/docker-compose.yml" in migrate.argv
    assert migrate.argv[-6:] == ("--no-deps", "-T", "api", "alembic", "upgrade", "head")


def _running(release, **changes):
    """One healthy container per service of `release`, on its image; `changes`: service -> fields."""
    out = []
    for service, image in sorted(release.images.items()):
        fields = {"image_ref": image, "status": "running", "health": "healthy", **changes.get(service, {})}
        if fields.pop("gone", False):
            continue
        out.append(Container(service, f"p-{service}-1", "i" * 64, fields["image_ref"], "sha256:x", fields["status"],
                             fields["health"], 0, False, 1.0, 0, "unless-stopped", "json-file", {}, (), "h",
                             user=fields.get("user", "")))
    return tuple(out)


def _current(release, **changes):
    return ServerFacts(**{**FRESH.__dict__, "current": release.id, "releases": (release.id,),
                          "images": frozenset(release.images.values()), "containers": _running(release, **changes)})


def test_the_same_release_current_and_healthy_plans_nothing(env, release):
    facts = _current(release)
    assert len(plan_for(env, release, facts)) == 0
    assert len(plan_for(env, release, facts, force=True)) > 0


@pytest.mark.parametrize("changes, said", [
    ({"worker": {"status": "exited", "health": None}}, "worker: exited"),
    ({"beat": {"gone": True}}, "beat: no container"),
    ({"api": {"image_ref": "jobagent/api:old"}}, "api: runs jobagent/api:old"),
    ({"flower": {"health": "unhealthy"}}, "flower: unhealthy"),
])
def test_the_same_release_with_a_drifted_service_is_brought_back_under_the_lock(env, release, changes, said):
    plan = plan_for(env, release, _current(release, **changes))
    t = titles(plan)
    assert t[0] == "take the deploy lock" and t[-1] == "release the deploy lock", t
    up = next(s for s in plan if s.title.startswith("bring back"))
    assert said in up.title and up.argv[-6:] == ("up", "-d", "--wait", "--wait-timeout", "300", "--remove-orphans")
    assert not any(x.startswith(("build", "migrate", "upload", "ship", "mark")) for x in t), t
    if "unhealthy" in said:  # compose would leave it: recreated by name first
        assert any(x.startswith("recreate flower") for x in t)


def test_an_image_the_server_lost_is_shipped_again_and_an_orphan_removed(env, release):
    facts = _current(release)
    orphan = Container("old-sidecar", "p-old-sidecar-1", "j" * 64, "busybox", "sha256:y", "running", None, 0, False,
                       1.0, 0, "no", "json-file", {}, (), "h")
    facts = ServerFacts(**{**facts.__dict__, "images": facts.images - {release.images["api"]},
                           "containers": facts.containers + (orphan,)})
    plan = plan_for(env, release, facts)
    t = titles(plan)
    assert f"ship {release.images['api']}" in t
    assert any("old-sidecar: an orphan" in x for x in t)


def test_a_release_already_on_disk_is_not_uploaded_again(env, release):
    facts = ServerFacts(**{**FRESH.__dict__, "current": "old", "releases": ("old", release.id)})
    assert not [s for s in plan_for(env, release, facts) if isinstance(s, WriteFile)]


def test_old_releases_beyond_the_limit_are_pruned_but_never_the_current(env, release):
    on_disk = tuple(f"r{i}" for i in range(6))
    facts = ServerFacts(**{**FRESH.__dict__, "current": "r0", "releases": on_disk})
    prune = next(s for s in plan_for(env, release, facts) if s.title.startswith("remove"))
    removed = {p.rsplit("/", 1)[-1] for p in prune.argv[3:]}
    assert removed == {"r1", "r2"} and "r0" not in removed  # keep 5: r0 (current), r3..r5, new


def test_images_no_kept_release_uses_are_pruned_after_the_releases_and_only_our_repositories(env, release):
    on_disk = tuple(f"r{i}" for i in range(6))
    facts = ServerFacts(**{**FRESH.__dict__, "current": "r0", "releases": on_disk})
    plan = plan_for(env, release, facts)
    t = titles(plan)
    prune = next(s for s in plan if s.title.startswith("remove images of"))
    assert t.index(prune.title) > t.index(next(x for x in t if x.startswith(f"mark {release.id} current")))
    kept = [p.split("/releases/")[1].split("/")[0] for p in prune.argv[4:]]
    assert sorted(kept) == sorted([release.id, "r0", "r3", "r4", "r5"])  # exactly the releases left on disk
    assert "REPOS='jobagent/api jobagent/frontend'" in prune.argv[2]
    assert deploy.kept_releases(on_disk, "r0", release.id, 5)[1] == ["r1", "r2"]


# -- preflight and lock ---------------------------------------------------------------------------


def test_preflight_refuses_a_server_without_docker_or_disk(env):
    facts = ServerFacts(docker=None, compose=None, disk_free_mb=100, current=None)
    problems = deploy.preflight(env, facts, deploy.Options())
    assert len(problems) == 3 and "no Docker engine" in problems[0] and "only 100 MB free" in problems[2]


def held(since_ago: float, renewed_ago: float | None) -> ServerFacts:
    renewed = None if renewed_ago is None else FRESH.now - renewed_ago
    return ServerFacts(**{**FRESH.__dict__, "lock": Lock("ci@runner", FRESH.now - since_ago, "abc", "d" * 32, renewed)})


def test_a_held_lock_refuses_and_names_its_holder_and_deploy_id(env):
    assert deploy.preflight(env, held(600, 10), deploy.Options()) == [
        f"a deploy is in progress: lock held by ci@runner (deploy {'d' * 12}) since 999400 (release abc), "
        "its lease renewed 10 s ago; wait for it to finish"]


def test_a_live_holders_lock_is_never_broken_however_old(env):
    assert "it is alive, so --break-lock leaves it" in deploy.preflight(env, held(7200, 30), deploy.Options(break_lock=True))[0]


@pytest.mark.parametrize("renewed_ago", [lock.LEASE_S + 1, 3600, None])
def test_a_stale_lock_is_named_stale_and_broken_at_once_with_break_lock(env, release, renewed_ago):
    stale = held(60, renewed_ago)
    [problem] = deploy.preflight(env, stale, deploy.Options())
    assert problem.startswith("a stale deploy lock is left by ci@runner") and "--break-lock" in problem
    assert deploy.preflight(env, stale, deploy.Options(break_lock=True)) == []
    take = next(s for s in plan_for(env, release, stale, break_lock=True) if s.phase == Phase.LOCK)
    assert "breaking a stale one" in take.title


def test_recovery_brings_the_previous_release_back_and_frees_the_lock(env, release):
    facts = ServerFacts(**{**FRESH.__dict__, "current": "prev", "releases": ("prev",)})
    plan = deploy.plan_recovery(env, release, facts, started=True)
    brought = len(set(release.images.values()))
    # Postgres and Redis first, on their own: the replacement's jobs run side by side, and each would
    # recreate a dependency whose config differs in the previous release
    assert titles(plan) == ["install the config of prev", "start postgres and redis", HAND_OVER,
                            "bring the previous release prev back", "reload caddy",
                            f"remove the unfinished release {release.id}",
                            f"remove the {brought} image(s) this deploy brought", "release the deploy lock"]
    assert titles(deploy.plan_recovery(env, release, facts, started=False))[0].startswith("remove the unfinished")


HAND_OVER = "hand Caddy's volumes to its user (files a root Caddy wrote before)"


def test_caddys_volumes_are_handed_over_unless_every_caddy_runs_as_its_user_already(env, release):
    for caddy, handed in (({"user": hardening.CADDY_USER}, False), ({"user": ""}, True), ({"user": "0:0"}, True),
                          ({"gone": True}, True)):
        # another release is current (not a converge); its containers run the images this one has
        facts = dataclasses.replace(_current(release, caddy=caddy), current="older", releases=("older",))
        plan = plan_for(env, release, facts)
        assert (HAND_OVER in titles(plan)) == handed, caddy
        if handed:
            assert titles(plan).index(HAND_OVER) < titles(plan).index(REPLACE)


def test_a_rollback_hands_caddys_volumes_over_when_the_caddy_it_replaces_ran_as_root(env, release, monkeypatch):
    class Recording:
        def run(self, plan):
            self.titles = titles(plan)
            self.steps = list(plan)

    for user, handed in (("", True), (hardening.CADDY_USER, False)):
        facts = dataclasses.replace(_current(release, caddy={"user": user, "image_ref": "caddy:2.7"}),
                                    releases=("older", release.id))
        monkeypatch.setattr(deploy, "gather", lambda env, connection: facts)
        runner = Recording()
        assert deploy.rollback(env, None, runner) == "older"
        assert (HAND_OVER in runner.titles) == handed, user
        if handed:  # with the image the running Caddy has, before the older release starts
            hand = next(s for s in runner.steps if s.title == HAND_OVER)
            assert "caddy:2.7" in hand.argv[-1] and runner.titles.index(HAND_OVER) < runner.titles.index(
                "start release older and wait until healthy")


def test_recovery_removes_only_the_images_the_server_did_not_have_and_never_by_force(env, release):
    had = sorted(set(release.images.values()))[:2]
    facts = ServerFacts(**{**FRESH.__dict__, "current": "prev", "releases": ("prev",), "images": frozenset(had)})
    [remove] = [s for s in deploy.plan_recovery(env, release, facts, started=False) if "image(s)" in s.title]
    removed = set(remove.argv[4:])
    assert removed == set(release.images.values()) - set(had) and "-f" not in remove.argv[:4]


def _probe_output(**sections) -> str:
    """What the deploy's one round trip prints: each fact's output under its mark."""
    return "".join(f"#####fact:{name}\n{text}\n#####exit:0\n" for name, text in sections.items())


def test_the_probe_output_parses_into_facts():
    output = _probe_output(
        versions="=====opskit:docker=====\n26.1.5\n=====opskit:compose=====\n2.26.1",
        space="=====opskit:folder=====\n/srv\n=====opskit:disk=====\n#####path:/srv\n/dev/vda 8192000 1 4096000 50% /srv",
        clock="160",
        on_disk="=====opskit:current=====\nreleases/abc\n=====opskit:releases=====\nold\nabc\n"
                '=====opskit:lock=====\n{"holder": "me@laptop", "since": 100, "release": "abc"}',
        images=f"a:1 sha256:{'1' * 64}\nb:2 sha256:{'2' * 64}",
        layers='[{"RepoTags": ["a:1"], "RootFS": {"Layers": ["sha256:x", "sha256:y"]}}]')
    facts = parse_deploy(output)
    assert (facts.docker, facts.compose, facts.disk_free_mb, facts.current) == ("26.1.5", "2.26.1", 4000, "abc")
    assert facts.releases == ("old", "abc") and facts.images == {"a:1", "b:2"}
    assert facts.lock == Lock("me@laptop", 100.0, "abc") and facts.now == 160.0
    assert facts.layers == set(chain_ids(["sha256:x", "sha256:y"])) and "sha256:x" in facts.layers


def test_an_empty_server_parses_into_empty_facts():
    facts = parse_deploy(_probe_output(versions="=====opskit:docker=====\ndocker: not found\n=====opskit:compose=====",
                                       space="", clock="5", on_disk="", images="", layers="[]"))
    assert facts.docker is None and facts.lock is None and facts.releases == () and facts.layers == frozenset()
    assert facts.compose is None and facts.disk_free_mb is None and facts.now == 5.0


def test_run_steps_name_where_they_run(env, release):
    plan = deploy.plan_deploy(env, release, FRESH, {}, "abc", deploy.Options(), None, ("a:1", "a:2", "b:1"))
    local = ("build", "import", "tag", "remove 3 image tag(s) of older builds", "keep this machine's build cache")
    here = [s.title for s in plan if isinstance(s, Run) and s.on == "local"]
    assert here and all(t.startswith(local) for t in here), here
    assert all(s.on == "server" for s in plan if isinstance(s, Run) and not s.title.startswith(local))


def test_marking_a_release_current_touches_its_folder_so_rollback_finds_the_one_before():
    step = deploy.mark_current(deploy.Layout("/srv/app"), "r7")
    assert step.argv[-1].endswith("&& touch /srv/app/releases/r7")


def test_caddy_is_reloaded_only_when_the_files_it_reads_change(env, release):
    import hashlib
    same = {"Caddyfile": hashlib.sha256(release.files["Caddyfile"].content).hexdigest()}
    facts = ServerFacts(**{**FRESH.__dict__, "current": "old", "releases": ("old",), "caddy_files": same})
    assert "reload caddy" not in titles(plan_for(env, release, facts))
    other = ServerFacts(**{**facts.__dict__, "caddy_files": {"Caddyfile": "0" * 64}})
    assert "reload caddy" in titles(plan_for(env, release, other))
    assert "reload caddy" in titles(plan_for(env, release))  # nothing there yet
