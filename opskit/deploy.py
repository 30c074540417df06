"""`invoke deploy`: from source to a healthy server, as one plan of steps, each in its phase.

    BUILD   build (no cache) + import checks + prisma guard      (the server is untouched)
    LOCK    take the deploy lock
    SHIP    ship images, upload the release folder               (the old release still serves)
    CONFIG  shared config, postgres + redis up, roles, migrations
    START   everything up --wait, reload caddy
    FINISH  mark current, prune old releases, unlock

Planning is pure (`plan_deploy`); `deploy` gathers facts, prints or runs the plan, and on a failure
runs the recovery that the failed step's phase calls for (`recovery_for`).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
import threading
import time
from dataclasses import dataclass, field

from . import db, facts as facts_of, hardening, images, lock, prisma, prune, render, rollout
from .errors import ConnectionFailed, ConnectionLost, DeployRefused, StepFailed
from .layout import Layout, compose_argv as compose
from .render import ACME_CA_ROOT_FILE, BACKUP_SCRIPT_FILE, backup_script
from .lock import LOCK_HELD  # noqa: F401  (the lock step's exit code, named where deploys are)
from .secrets import Secret
from .steps import SERVER, Beside, Phase, Plan, Run, ShipImage, WriteFile, in_phase


@dataclass
class Options:
    rebuild: bool = False
    break_lock: bool = False
    force: bool = False  # redeploy even when the release is already current
    skip_backup: bool = False  # migrate without the backup that would come first (logged)
    holder: str = field(default_factory=lambda: lock.Holder().who)
    deploy_id: str = field(default_factory=lambda: lock.Holder().deploy_id)  # this run's, in its lock

    @property
    def lock_holder(self) -> lock.Holder:
        return lock.Holder(self.holder, self.deploy_id)


# -- preflight ------------------------------------------------------------------------------------


def preflight(env, facts, options: Options) -> list[str]:
    """Reasons to refuse the deploy before anything changes (empty when all is well)."""
    problems = []
    if not facts.docker:
        problems.append(f"{env.ssh}: no Docker engine answers for {env.ssh.user} (install Docker, add the user "
                        "to the docker group)")
    if not facts.compose:
        problems.append(f"{env.ssh}: `docker compose` (v2) is missing on the server")
    need = env.smoke.min_free_disk_mb  # the same floor the smoke suite holds the server to
    if facts.disk_free_mb is not None and facts.disk_free_mb < need:
        problems.append(f"{env.ssh}: only {facts.disk_free_mb} MB free under {env.remote_dir} "
                        f"(need {need} MB); prune images with `docker image prune`")
    problems += lock.problems(facts.lock, facts.now, options.break_lock)
    return problems


# -- the plan -------------------------------------------------------------------------------------


def plan_deploy(env, release, facts, local: dict, revision: str, options: Options, parts: dict | None = None,
                leftovers: tuple = (), heads: tuple | None = None) -> Plan:
    """Every step of a deploy of `release`, given what the server and this machine have (`parts`:
    `images.dependency_parts`, the builds whose dependency layers are an image of their own;
    `leftovers`: tags of older builds here that `prune.local_leftovers` would remove; `heads`:
    the Alembic heads of the API's build context, `migration_heads`)."""
    layout = Layout(env.remote_dir)
    folder = layout.release(release.id)
    plan = Plan(f"deploy {release.id} to {env.name} ({env.ssh})")
    if is_converge(release, facts, options):
        return plan_converge(env, release, facts, options)  # the same inputs: repair what drifted, if anything

    builds = images.plan_builds(env, release, local, revision, rebuild=options.rebuild, parts=parts)
    plan.add(*builds, phase=Phase.BUILD)
    if "frontend" in env.services:
        # Alembic owns the schema: a frontend that would run prisma migrate / db push never ships
        frontend = env.services["frontend"]
        plan.add(prisma.guard_step(release.images["frontend"], frontend.command, frontend.healthcheck),
                 phase=Phase.BUILD)

    plan.add(acquire_lock(layout, release.id, options, facts.lock is not None and options.break_lock),
             phase=Phase.LOCK)

    moves = in_phase(Phase.SHIP, *move_images(env, release, facts))
    folder_steps = in_phase(Phase.SHIP, *upload_release(layout, release)) if release.id not in facts.releases else []
    # the database first: roles and migrations run before the new API and frontend take traffic
    config = in_phase(Phase.CONFIG, install_config(layout, release.id), start_stores(folder),
                      db.roles_step(env, folder))
    if moves and not images_to_move(env, release, facts) & stores_images(release):
        # the stores run images the server has: they need nothing the ship brings (the migration does)
        plan.add(Beside("ship the images beside the release folder, its config and the stores",
                        (moves, folder_steps + config)))
    else:
        plan.add(*moves, *folder_steps, *config)
    if env.backup is not None:
        plan.add(skipped_backup(release.id, options) if options.skip_backup else backup_before_migrating(env, folder),
                 phase=Phase.CONFIG)
    plan.add(db.migrate_step(env, folder, heads), phase=Phase.CONFIG)
    if not caddy_volumes_handed_over(facts):
        plan.add(hand_caddy_volumes(env.project, release.images["caddy"]), phase=Phase.START)
    plan.add(rollout.replace_step(env, folder), phase=Phase.START)
    if caddy_config_changed(release, facts):  # a reload with the same config would only cost a restart of its apps
        plan.add(reload_caddy(folder), phase=Phase.START)
    plan.add(mark_current(layout, release.id), phase=Phase.FINISH)
    if env.backup is not None:  # only once the release is current: a failed deploy leaves the old script
        plan.add(install_backup_script(layout, release.id), phase=Phase.FINISH)
    kept = kept_releases(facts.releases, facts.current, release.id, env.keep_releases)[0]
    plan.add(*prune_releases(layout, facts.releases, facts.current, release.id, env.keep_releases),
             prune.server_images(env, layout, kept), release_lock(layout), phase=Phase.FINISH)
    if builds.steps:  # this machine's side, bounded too (never failing the deploy, as the server's prune)
        plan.add(*filter(None, [prune.local_images_step(list(leftovers)), prune.build_cache_step()]),
                 phase=Phase.FINISH)
    return plan


def is_converge(release, facts, options: Options) -> bool:
    """The same inputs as the current release, not forced: the deploy converges (`plan_converge`)."""
    return facts.current == release.id and not (options.force or options.rebuild)


def drift(release, containers) -> dict[str, str]:
    """{service: what is wrong with it} for the services of `release` whose containers do not run
    its image, are missing, stopped or not healthy; containers of no service of it, as orphans."""
    wrong = {}
    by_service: dict = {}
    for c in containers:
        by_service.setdefault(c.service, []).append(c)
    for service, image in sorted(release.images.items()):
        found = by_service.get(service, [])
        if not found:
            wrong[service] = "no container"
        elif any(c.image_ref != image for c in found):
            wrong[service] = "runs " + ", ".join(sorted({c.image_ref for c in found if c.image_ref != image}))
        elif any(not c.is_running for c in found):
            wrong[service] = ", ".join(sorted({c.status for c in found if not c.is_running}))
        elif any(c.health not in (None, "healthy") for c in found):
            wrong[service] = ", ".join(sorted({c.health for c in found if c.health not in (None, "healthy")}))
    for service in sorted(set(by_service) - set(release.images)):
        wrong[service] = "an orphan (no service of this release)"
    return wrong


def plan_converge(env, release, facts, options: Options) -> Plan:
    """The release is current: bring what drifted back to it (images the server lost shipped
    again, containers missing, stopped, on another image or unhealthy recreated, orphans
    removed), under the lock. Empty when every service runs its image, healthy."""
    wrong = drift(release, facts.containers)
    plan = Plan(f"converge {env.name} ({env.ssh}) on its current release {release.id}")
    if not wrong:
        return plan
    layout = Layout(env.remote_dir)
    folder = layout.release(release.id)
    plan.add(acquire_lock(layout, release.id, options, facts.lock is not None and options.break_lock),
             phase=Phase.LOCK)
    plan.add(*move_images(env, release, facts), phase=Phase.SHIP)
    sick = sorted(s for s, why in wrong.items() if s in release.images and why in ("unhealthy", "starting"))
    if sick:  # compose leaves a container whose config is unchanged alone: recreate these by name
        plan.add(Run(f"recreate {', '.join(sick)} (not healthy)",
                     compose(folder, "up", "-d", "--no-deps", "--force-recreate", *sick),
                     on=SERVER, stream=True, timeout=360), phase=Phase.START)
    plan.add(start_all(folder, "bring back " + "; ".join(f"{s}: {why}" for s, why in wrong.items())),
             phase=Phase.START)
    plan.add(release_lock(layout), phase=Phase.FINISH)
    return plan


def install_backup_script(layout: Layout, release_id: str) -> Run:
    """The timer's script, from the release just made current, in place (0700): the next scheduled
    backup runs the inventory's `backup:` as this release renders it. A rollback keeps it: the
    script follows the inventory, as the timer that runs it does."""
    source, target = posixpath.join(layout.release(release_id), BACKUP_SCRIPT_FILE), layout.backup_script
    return Run(f"install the scheduled backup's script {target}",
               ["sh", "-c", 'set -e; umask 077; mkdir -p "${2%/*}"; cp "$1" "$2.new"; chmod 0700 "$2.new"; '
                'mv -f "$2.new" "$2"', "opskit-backup-script", source, target], on=SERVER)


def skipped_backup(release_id: str, options: Options) -> Run:
    """--skip-backup, on the server's record (its journal, tag opskit-deploy): who migrated without a backup."""
    text = f"deploy {options.deploy_id} of {release_id} by {options.holder}: migrating WITHOUT a backup (--skip-backup)"
    return Run("no backup before migrating (--skip-backup), logged on the server",
               ["logger", "--tag", "opskit-deploy", "--priority", "user.warning", "--", text], on=SERVER)


def backup_before_migrating(env, folder: str) -> Run:
    """One step: when the new image's Alembic would move the head (`alembic current` does not say
    `(head)`), the whole backup, before `alembic upgrade head`; a failed backup fails the step, so
    nothing migrates. At head it takes none, nor on a database with no schema yet (a first deploy,
    or one after a lost disk, whose empty backup would become the `latest` to restore). The backup
    runs psql through the new release's compose file: on a first deploy there is no `current` yet."""
    at_head = shlex.join(compose(folder, "run", "--rm", "--no-deps", "-T", "api", "alembic", "current"))
    # `alembic current` prints `REV (head)` at head and nothing on a database with no schema yet;
    # when it fails, the backup is taken: only a sure answer skips it
    guard = (f'if cur=$({at_head} 2>/dev/null); then\n'
             '  case $cur in *"(head)"*) echo "no migration pending: no backup"; exit 0;; esac\n'
             '  [ -n "$(printf %s "$cur" | tr -d "[:space:]")" ] || { echo "no schema yet: nothing to back up"; exit 0; }\n'
             'fi\n')
    return Run("backup before migrating (when the Alembic head moves)",
               ["sh", "-c", guard + backup_script(env, folder)], on=SERVER, stream=True, timeout=4 * 3600)


def images_to_move(env, release, facts) -> set:
    """The images of the release (and the backup's restic) that the server lacks."""
    wanted = set(release.images.values()) | ({env.backup.image} if env.backup else set())  # restic runs there
    return wanted - facts.images


def stores_images(release) -> set:
    """The images `start_stores` and the roles step run."""
    return {release.images[s] for s in ("postgres", "redis") if s in release.images}


def move_images(env, release, facts) -> list:
    """Get every image of the release onto the server that it lacks: built images by the registry
    (when the inventory names one) or shipped over SSH; the official ones pulled, or shipped."""
    steps = []
    built = {info["image"] for info in release.builds.values()}
    for image in sorted(images_to_move(env, release, facts)):
        if image in built and env.registry:
            steps.append(Run(f"push {image}", ["docker", "push", image], stream=True, timeout=1800))
            steps.append(Run(f"pull {image} from the registry", ["docker", "pull", image], on=SERVER, stream=True,
                             timeout=1800))
        elif image not in built and not env.ship_images:
            steps.append(Run(f"pull {image}", ["docker", "pull", image], on=SERVER, stream=True, timeout=900))
        else:
            steps.append(ShipImage(f"ship {image}", image, facts.layers, margin_mb=env.smoke.min_free_disk_mb))
    return steps


def recovery_for(env, release, facts, failed: Phase) -> Plan | None:
    """What a failure in phase `failed` leaves to undo, decided from the phase alone: nothing
    before the lock is ours; from SHIP on, the unfinished release goes and the lock is freed;
    from CONFIG on, the previous release is also started again."""
    if failed <= Phase.LOCK:
        return None
    return plan_recovery(env, release, facts, started=failed >= Phase.CONFIG)


def plan_recovery(env, release, facts, started: bool) -> Plan:
    """After a failure: the previous release serves again, the new one goes (with the images this
    deploy brought, unless something runs them), the lock is freed. `started` says the new
    release's config was installed or its containers started."""
    layout = Layout(env.remote_dir)
    plan = Plan(f"recover from a failed deploy of {release.id}")
    if started and facts.current and facts.current != release.id:
        # the new release's Caddy may have run as another user meanwhile: always handed over
        plan.add(*switch_to(env, facts.current, f"bring the previous release {facts.current} back",
                            caddy_image(facts) or release.images.get("caddy")))
    if release.id not in facts.releases and release.id != facts.current:
        plan.add(Run(f"remove the unfinished release {release.id}",
                     ["rm", "-rf", "--", layout.release(release.id), layout.partial(release.id)], on=SERVER))
        brought = sorted(set(release.images.values()) - facts.images)
        if brought:  # no --force: an image a container runs stays
            plan.add(Run(f"remove the {len(brought)} image(s) this deploy brought",
                         ["sh", "-c", 'docker image rm "$@" >/dev/null 2>&1; exit 0', "sh", *brought], on=SERVER))
    plan.add(release_lock(layout))
    return plan


def switch_to(env, release_id: str, title: str, caddy_image: str | None = None) -> list:
    """Serve an existing release again: its config, its containers (those that serve traffic
    start-first), Caddy reloaded (no build). With `caddy_image` (one the server has), Caddy's
    volumes are handed to its user first, as in a deploy."""
    layout = Layout(env.remote_dir)
    folder = layout.release(release_id)
    hand_over = [hand_caddy_volumes(env.project, caddy_image)] if caddy_image else []
    return [install_config(layout, release_id), start_stores(folder), *hand_over,
            rollout.replace_step(env, folder, title), reload_caddy(folder)]


def caddy_image(facts) -> str | None:
    """The image a Caddy container of the project was made from (on the server: it has the container)."""
    return next((c.image_ref for c in facts.containers if c.service == "caddy"), None)


def caddy_volumes_handed_over(facts) -> bool:
    """Whether Caddy's volumes are its user's already: every Caddy container runs as that user, so
    the deploy or rollback that started it handed them over first, and only that user wrote since."""
    caddies = [c for c in facts.containers if c.service == "caddy"]
    return bool(caddies) and all(c.user == hardening.CADDY_USER for c in caddies)


def start_stores(folder: str) -> Run:
    """Postgres and Redis of the release in `folder` up (recreated if their config moved), before
    the replacement: its jobs run side by side and each `up` would recreate a dependency whose
    config moved (a rollback to a release with another Redis config), all of them at once."""
    return Run("start postgres and redis", compose(folder, "up", "-d", "--wait", "--wait-timeout", "180",
                                                   "postgres", "redis"), on=SERVER, stream=True, timeout=240)


def start_all(folder: str, title: str) -> Run:
    """Every service of the release in `folder` up, orphans removed, waited on until healthy."""
    return Run(title, compose(folder, "up", "-d", "--wait", "--wait-timeout", "300", "--remove-orphans"),
               on=SERVER, stream=True, timeout=360)


def install_config(layout: Layout, release_id: str) -> Run:
    """Copy the release's Caddyfile, first-boot scripts and secret files into the folders the
    containers mount (`Layout.shared`); the renames make each swap atomic. A secret file is
    renamed over, never rewritten: a running container keeps the file it mounted (the old value)
    until Compose recreates it (its secrets label changed), so the old release serves on unchanged
    while the new one is prepared."""
    rel = shlex.quote(layout.release(release_id))
    caddy, init, secrets = (shlex.quote(p) for p in (layout.caddy, layout.postgres_init, layout.secrets))
    script = (f"set -e; mkdir -p {caddy} {init}; mkdir -p -m 0700 {secrets}; chmod 0700 {secrets}; "
              # Caddy reads as its own user, whatever the deploy user's umask
              f"chmod 0755 {caddy}; cp {rel}/Caddyfile {caddy}/.Caddyfile.new && chmod 0644 {caddy}/.Caddyfile.new && "
              f"mv -f {caddy}/.Caddyfile.new {caddy}/Caddyfile; "
              f"cp -p {rel}/postgres-init/* {init}/; "
              # the ACME server's root (tls.acme_ca_root), read by Caddy's user beside the Caddyfile
              f"if [ -f {rel}/{ACME_CA_ROOT_FILE} ]; then cp {rel}/{ACME_CA_ROOT_FILE} {caddy}/.acme.new && "
              f"chmod 0644 {caddy}/.acme.new && mv -f {caddy}/.acme.new {caddy}/{ACME_CA_ROOT_FILE}; fi; "
              # a release from before secret files has none (its containers read env files)
              f"for f in {rel}/secrets/*; do [ -e \"$f\" ] || continue; n=${{f##*/}}; "
              f"cp -p \"$f\" {secrets}/.\"$n\".new; "
              f"mv -f {secrets}/.\"$n\".new {secrets}/\"$n\"; done")
    return Run(f"install the config of {release_id}", ["sh", "-c", script], on=SERVER)


def hand_caddy_volumes(project: str, image: str) -> Run:
    """Caddy runs as its own user (hardening.CADDY_USER); a release before that ran it as root, whose
    files in caddy_data (certificates, keys, the local CA) it could no longer read. Root in a throw-away
    container, with only the capabilities to walk Caddy's 0700 folders and change owners, hands over
    what is not the user's yet: nothing on a new server or a second run."""
    uid = hardening.CADDY_USER
    volumes = " ".join(shlex.quote(f"{project}_{v}") for v in ("caddy_data", "caddy_config"))
    # one container for the volumes that exist (names are Compose's: no blank, no glob)
    script = (f"set -e; mounts=; paths=; for v in {volumes}; do docker volume inspect \"$v\" >/dev/null 2>&1 && "
              "mounts=\"$mounts -v $v:/v/$v\" && paths=\"$paths /v/$v\"; done; [ -n \"$mounts\" ] || exit 0; "
              "docker run --rm --network none --user 0:0 --cap-drop ALL --cap-add CHOWN --cap-add DAC_READ_SEARCH "
              f"--security-opt no-new-privileges:true --read-only --entrypoint find $mounts {shlex.quote(image)} "
              f"$paths ! -user {uid.split(':')[0]} -print -exec chown -h {uid} {{}} +")
    return Run("hand Caddy's volumes to its user (files a root Caddy wrote before)", ["sh", "-c", script],
               on=SERVER, timeout=180)


def caddy_config_changed(release, facts) -> bool:
    """Whether the files Caddy reads (its Caddyfile, the ACME server's root) differ from those
    in its config folder on the server now."""
    for name in ("Caddyfile", ACME_CA_ROOT_FILE):
        new = release.files.get(name)
        if new is not None and hashlib.sha256(new.content).hexdigest() != facts.caddy_files.get(name):
            return True
    return False


def reload_caddy(folder: str) -> Run:
    """A graceful reload: open connections and SSE streams survive (stream_close_delay)."""
    return Run("reload caddy", compose(folder, "exec", "-T", "caddy", "caddy", "reload", "--config",
                                       "/etc/caddy/Caddyfile", "--adapter", "caddyfile"), on=SERVER, timeout=60)


def acquire_lock(layout: Layout, release_id: str, options: Options, breaking: bool) -> Run:
    """The lock step (see `lock.acquire`): of two deploys racing here, exactly one gets the lock."""
    return lock.acquire(layout, options.lock_holder, release_id, breaking)


def release_lock(layout: Layout) -> Run:
    return lock.release(layout)


def upload_release(layout: Layout, release) -> list:
    """Files into `<id>.partial/`, then one rename: a release folder is whole or absent."""
    final = layout.release(release.id)
    partial = layout.partial(release.id)
    dirs = sorted({posixpath.dirname(posixpath.join(partial, p)) for p in release.files})
    # the secret files are 0444 (containers of other uids read them): this folder guards them
    closed = [d for d in dirs if posixpath.basename(d) == render.SECRETS_DIR]
    steps = [Run(f"prepare release folder {release.id}",
                 ["sh", "-c", (f"rm -rf {shlex.quote(partial)} && mkdir -p -m 0750 " + " ".join(map(shlex.quote, dirs))
                               + "".join(f" && chmod {render.SECRETS_DIR_MODE:o} {shlex.quote(d)}" for d in closed))],
                 on=SERVER)]
    for rel, f in sorted(release.files.items()):
        content = Secret(f.content.decode(), rel) if f.secret else f.content
        steps.append(WriteFile(f"upload {rel}", posixpath.join(partial, rel), content, f.mode, on=SERVER))
    steps.append(Run(f"complete release folder {release.id}", ["mv", "-T", "--", partial, final], on=SERVER))
    return steps


def mark_current(layout: Layout, release_id: str) -> Run:
    """Point `current` at the release (one rename), and touch its folder: the folders' times are
    the order releases were made current in, which rollback and pruning read."""
    tmp = layout.current + ".new"
    return Run(f"mark {release_id} current",
               ["sh", "-c", f"ln -sfn releases/{shlex.quote(release_id)} {shlex.quote(tmp)} && "
                            f"mv -T {shlex.quote(tmp)} {shlex.quote(layout.current)} && "
                            f"touch {shlex.quote(layout.release(release_id))}"], on=SERVER)


def kept_releases(on_disk, current, new_id: str, keep: int) -> tuple[list, list]:
    """(kept, removed): `keep` releases in all, the new one, the current one (the rollback target),
    and the newest of the others."""
    others = [r for r in on_disk if r not in (new_id, current)]
    room = max(keep - 1 - (1 if current and current != new_id else 0), 0)
    cut = max(len(others) - room, 0)
    kept = [new_id] + ([current] if current and current != new_id else []) + others[cut:]
    return kept, others[:cut]


def prune_releases(layout: Layout, on_disk, current, new_id: str, keep: int) -> list:
    """Remove the releases beyond `keep` (see `kept_releases`)."""
    old = kept_releases(on_disk, current, new_id, keep)[1]
    if not old:
        return []
    return [Run(f"remove {len(old)} old release(s)", ["rm", "-rf", "--", *(layout.release(r) for r in old)],
                on=SERVER)]



# -- running it -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    release: str
    environment: str
    images: dict
    steps: list  # (title, seconds)
    bytes_shipped: int
    seconds: float
    urls: list

    def as_dict(self) -> dict:
        return {"release": self.release, "environment": self.environment, "images": self.images,
                "steps": [{"title": t, "seconds": round(s, 2)} for t, s in self.steps],
                "bytes_shipped": self.bytes_shipped, "seconds": round(self.seconds, 2), "urls": self.urls}

    def summary(self) -> str:
        if not self.steps:
            return f"release {self.release} is already current on {self.environment}: nothing changed"
        lines = [f"deployed release {self.release} to {self.environment} in {self.seconds:.1f}s "
                 f"({self.bytes_shipped / 1e6:.1f} MB of image layers shipped)"]
        lines += [f"  {s:7.1f}s  {t}" for t, s in self.steps if s >= 0.5]
        lines += [f"  {url}" for url in self.urls]
        return "\n".join(lines)


def gather(env, connection):
    """What the deploy plans from, read in one SSH round trip (see `facts.gather_deploy`)."""
    return facts_of.gather_deploy(connection, env)


def deploy(env, release, connection, runner, options: Options, revision: str) -> Outcome | None:
    """Plan the deploy of `release` from the server's facts, then run it (or print it: dry run).
    On a failure, run the recovery plan and raise the original error."""
    started_at = time.monotonic()
    heads = _in_background(migration_heads, env)  # a local process, while the server is asked
    facts = gather(env, connection)
    problems = preflight(env, facts, options)
    if problems:
        raise DeployRefused("deploy refused, nothing was changed:\n" + "\n".join(f"  - {p}" for p in problems))
    local, parts = local_build_facts(env, release, options, refresh=not runner.dry_run)
    # kept here: this release's images and those the server has (its kept releases', rollback targets)
    leftovers = prune.local_leftovers(images.repository_images(b.repository for b in env.builds.values()),
                                      env.keep_releases, {b["image"] for b in release.builds.values()} | facts.images,
                                      parts) if parts else []  # nothing to build: nothing to bound here
    plan = plan_deploy(env, release, facts, local, revision, options, parts, tuple(leftovers),
                       None if is_converge(release, facts, options) else heads())  # a converge migrates nothing
    for name, why in sorted(parts.items()):
        if isinstance(why, str):  # the operator learns why this build gets no dependency image
            runner.say(f"{name}: built whole with no cache, no dependency image ({why}); README \"Builds\"")
    if not plan.steps:
        runner.say(f"release {release.id} is already current on {env.name} and its {len(facts.containers)} "
                   "containers run its images, healthy: nothing to do (--force redeploys it)")
        return Outcome(release.id, env.name, dict(sorted(release.images.items())), [], 0,
                       time.monotonic() - started_at, [f"https://{d}" for _, d in env.domains.items()])
    if runner.dry_run:
        runner.run(plan)
        runner.say("on failure: " + plan_recovery(env, release, facts, started=True).render())
        return None

    try:
        with lock.Lease(runner, Layout(env.remote_dir), options.lock_holder):
            runner.run(plan)
    except StepFailed as failure:
        if failure.step.phase == Phase.LOCK and failure.returncode == LOCK_HELD:
            raise DeployRefused("deploy refused, nothing was changed: another deploy took the lock first: "
                                f"{lock.holder_named(failure.output)}") from None
        # the furthest phase started, not only the failed step's: a step beside it may have gone further
        recover(runner, recovery_for(env, release, facts, max(failure.step.phase, runner.reached)),
                f"{failure.step.title} failed in phase {failure.step.phase.name.lower()}")
        raise
    except ConnectionLost as lost:
        raise after_lost_link(env, release, facts, connection, runner, options, lost) from None
    return Outcome(
        release=release.id, environment=env.name, images=dict(sorted(release.images.items())),
        steps=[(r.step.title, r.seconds) for r in runner.results], bytes_shipped=runner.bytes_shipped,
        seconds=time.monotonic() - started_at,
        urls=[f"https://{d}" for _, d in env.domains.items()],
    )


def _in_background(fn, *args):
    """Start fn(*args) in a thread; the function returned waits for its result (None if it raised)."""
    box: dict = {}

    def work():
        try:
            box["value"] = fn(*args)
        except Exception:  # noqa: BLE001 (what it reads is optional: without it, the upgrade runs)
            box["value"] = None
    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def result():
        thread.join()
        return box.get("value")
    return result


def migration_heads(env) -> tuple | None:
    """The Alembic heads of the build context the API runs (None: unknown, the upgrade always runs)."""
    service = env.services.get("api")
    build = env.builds.get(service.build) if service is not None else None
    return db.alembic_heads(build.context) if build is not None else None


def local_build_facts(env, release, options: Options, refresh: bool) -> tuple[dict, dict]:
    """What this machine has of the release's images, and (when some must be built) how each
    build splits into a dependency image and code layers, with those dependency images."""
    local = images.local_images(b["image"] for b in release.builds.values())
    if not options.rebuild and all(local.get(b["image"]) is not None and local[b["image"]].labels.get(
            images.LABEL_DIGEST) == b["context_digest"] for b in release.builds.values()):
        return local, {}
    parts = images.dependency_parts(env, refresh=refresh and not env.ship_images)
    layered = [p.image for p in parts.values() if isinstance(p, images.Layered)]
    return {**local, **images.local_images(layered)}, parts


def recover(runner, recovery: Plan | None, why: str) -> bool:
    """Run a recovery plan (when there is one); says so, and whether it went through."""
    if recovery is None:
        return True
    runner.say(f"!!  {why}: recovering")
    try:
        runner.run(recovery)
        return True
    except (StepFailed, ConnectionLost) as second:
        runner.say(f"!!  recovery failed too, at: {getattr(second.step, 'title', '?')}\n{second}")
        return False


def after_lost_link(env, release, facts, connection, runner, options: Options, lost: ConnectionLost):
    """The link broke mid-deploy: reconnect (a few tries) and, when the lock is still this
    deploy's, run the recovery its phase calls for. The error to raise, saying what was done."""
    runner.say(f"!!  {lost}: reconnecting to recover")
    try:
        connection.reconnect()
        now = gather(env, connection)
    except ConnectionFailed as exc:
        return ConnectionLost(f"{lost}; the server stays out of reach ({exc}). Nothing more was changed; this "
                              f"deploy's lock lease runs out within {lock.LEASE_S} s, then "
                              "`invoke deploy --break-lock` goes on", lost.step)
    if now.lock is None or now.lock.deploy_id != options.deploy_id:
        return ConnectionLost(f"{lost}; reconnected: this deploy held no lock, so it changed nothing", lost.step)
    phase = max(lost.step.phase, runner.reached, Phase.SHIP) if lost.step is not None else Phase.FINISH
    done = recover(runner, recovery_for(env, release, facts, phase), "the link was lost")
    return ConnectionLost(f"{lost}; reconnected and " + (
        "recovered: the previous release serves and the lock is free" if done else
        f"the recovery failed too: see above; the lock's lease runs out within {lock.LEASE_S} s"), lost.step)


def current_files(env, connection) -> dict[str, bytes]:
    """The files of the release the server serves, by relative path (from its manifest)."""
    layout = Layout(env.remote_dir)
    manifest = connection.read_file(posixpath.join(layout.current, "manifest.json"))
    if manifest is None:
        raise DeployRefused(f"{env.ssh}: no current release under {env.remote_dir} (nothing deployed yet)")
    files = {"manifest.json": manifest}
    for rel in json.loads(manifest)["files"]:
        files[rel] = connection.read_file(posixpath.join(layout.current, rel)) or b""
    return files


def rollback(env, connection, runner, to: str | None = None) -> str:
    """Serve a previous release again (the one before `current`, or `to`), without a build."""
    facts = gather(env, connection)
    if facts.lock:
        raise DeployRefused("rollback refused: " + "; ".join(lock.problems(facts.lock, facts.now, False)))
    if to is None:
        older = [r for r in facts.releases if r != facts.current]
        if not older:
            raise DeployRefused(f"nothing to roll back to: the server has only release {facts.current}")
        to = older[-1]
    elif to not in facts.releases:
        raise DeployRefused(f"release {to} is not on the server (it has: {', '.join(facts.releases) or 'none'})")
    layout = Layout(env.remote_dir)
    plan = Plan(f"roll back {env.name} from {facts.current} to {to}")
    plan.add(acquire_lock(layout, to, Options(), breaking=False), phase=Phase.LOCK)
    handed = caddy_volumes_handed_over(facts)  # else the Caddy now running (root) may have written there
    plan.add(*switch_to(env, to, f"start release {to} and wait until healthy", None if handed else caddy_image(facts)),
             phase=Phase.START)
    plan.add(mark_current(layout, to), release_lock(layout), phase=Phase.FINISH)
    try:
        runner.run(plan)
    except StepFailed as failure:
        if failure.step.phase == Phase.LOCK and failure.returncode == LOCK_HELD:
            raise DeployRefused(f"rollback refused: a deploy took the lock first: {lock.holder_named(failure.output)}") from None
        if failure.step.phase > Phase.LOCK:  # the lock is ours: give it back
            runner.run(Plan("unlock", [release_lock(layout)]))
        raise
    return to
