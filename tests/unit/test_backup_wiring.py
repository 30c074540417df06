"""The `backup:` section of the inventory and what a deploy does with it: credentials as 0600 files,
and a backup before `alembic upgrade head` unless --skip-backup."""

from __future__ import annotations

import pytest

from opskit import deploy, render, smoke
from opskit.errors import InventoryError
from opskit.facts import ServerFacts

FRESH = ServerFacts(docker="26.1.5", compose="2.26.1", disk_free_mb=50_000, current=None, now=1_000_000.0)
# a login key stands in as its shape only: several lines, no trailing newline (no key material in the tree)
KEY = "login-key-line-one\nnot-a-real-key\nlogin-key-line-three"
BACKUP_ENV = {"OPSKIT_RESTIC_PASSWORD": "restic-pw-never-printed", "OPSKIT_RESTIC_SSH_KEY": KEY,
              "OPSKIT_RESTIC_KNOWN_HOSTS": "[box.example]:23 ssh-ed25519 AAAAC3Nza"}


@pytest.fixture
def backup_env(make_env, secrets_env):
    def make(section=None, refs=True):
        def edit(raw):
            prod = raw["environments"]["production"]
            prod["backup"] = section or {"repository": "sftp://u1@box.example:23//backups/jobagent",
                                         "keep": {"daily": 3, "weekly": 2}}
            if refs:
                prod.setdefault("secrets", {}).update(
                    {name.removeprefix("OPSKIT_").lower(): f"env:{name}" for name in BACKUP_ENV})
        return make_env("production", edit, environ={**secrets_env, **BACKUP_ENV})
    return make


def test_a_backup_section_is_read_with_its_defaults(backup_env):
    b = backup_env().backup
    assert (b.repository, b.keep_daily, b.keep_weekly, b.keep_last, b.keep_local, b.schedule) == (
        "sftp://u1@box.example:23//backups/jobagent", 3, 2, 10, 2, "*-*-* 03:15:00")
    assert backup_env().secrets["restic_ssh_key"].reveal() == KEY + "\n"


def test_an_environment_without_backup_asks_for_no_backup_secret(make_env):
    env = make_env("production")
    assert env.backup is None and not any(name.startswith("restic_") for name in env.secrets)


def test_every_bad_backup_key_is_named_at_once(backup_env):
    with pytest.raises(InventoryError) as info:
        backup_env({"repository": "ftp://x", "keep": {"daily": 0, "monthly": 1}, "schedule": "daily; rm"})
    text = str(info.value)
    for key in ("backup.repository: 'ftp://x' is not", "backup.keep.daily:", "backup.keep.monthly: unknown key",
                "backup.schedule: expected a systemd calendar event"):
        assert key in text, text


def test_backup_secrets_are_required_by_name_when_backing_up(backup_env):
    with pytest.raises(InventoryError, match="secrets.restic_password: is required"):
        backup_env(refs=False)


def test_the_release_carries_restics_secret_files_and_the_timers_script(backup_env):
    env = backup_env()
    release = render.render(env)
    for name in ("restic_password", "restic_ssh_key", "restic_known_hosts"):
        f = release.files[f"secrets/{name}"]
        assert f.secret and f.mode == render.SECRET_FILE_MODE and f.content == env.secrets[name].reveal().encode()
    script = release.files[render.BACKUP_SCRIPT_FILE]
    assert script.mode == 0o700 and not script.secret
    text = script.content.decode()
    assert "restic-pw-never-printed" not in text and "not-a-real-key" not in text
    assert "flock -w" in text and "--keep-last 10 --keep-daily 3" in text and "RESTIC_PASSWORD_FILE=/run/secrets/" in text
    compose = release.files["docker-compose.yml"].content.decode()
    assert "restic_password" not in compose.split("\nsecrets:")[0], "no service mounts restic's secrets"


def test_an_s3_repository_takes_its_keys_file_and_no_ssh_secret(make_env, secrets_env):
    creds = "[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = s3-secret-never-printed"

    def edit(raw):
        prod = raw["environments"]["production"]
        prod["backup"] = {"repository": "s3:https://s3.example.com/bucket/jobagent"}
        prod.setdefault("secrets", {}).update({"restic_password": "env:OPSKIT_RESTIC_PASSWORD",
                                               "restic_s3_credentials": "env:OPSKIT_RESTIC_S3"})

    env = make_env("production", edit, environ={**secrets_env, "OPSKIT_RESTIC_PASSWORD": "pw", "OPSKIT_RESTIC_S3": creds})
    assert {n for n in env.secrets if n.startswith("restic_")} == {"restic_password", "restic_s3_credentials"}
    release = render.render(env)
    assert release.files["secrets/restic_s3_credentials"].content == (creds + "\n").encode()
    assert "secrets/restic_ssh_key" not in release.files
    text = release.files[render.BACKUP_SCRIPT_FILE].content.decode()
    assert "AWS_SHARED_CREDENTIALS_FILE=/run/secrets/restic-s3-credentials" in text and "s3-secret" not in text
    assert "restic_s3_credentials" in smoke.secret_files(env)

    def without_keys(raw):
        edit(raw)
        del raw["environments"]["production"]["secrets"]["restic_s3_credentials"]

    with pytest.raises(InventoryError, match="secrets.restic_s3_credentials: is required"):
        make_env("production", without_keys, environ={**secrets_env, "OPSKIT_RESTIC_PASSWORD": "pw"})


def test_a_deploy_backs_up_before_migrating_and_installs_the_script_once_current(backup_env):
    env = backup_env()
    titles = [s.title for s in deploy.plan_deploy(env, render.render(env), FRESH, {}, "abc", deploy.Options())]
    order = ["pull opskit/restic:0.14", "roles ", "backup before migrating", "migrate: alembic upgrade head",
             "mark ", "install the scheduled backup's script"]
    positions = [next(i for i, t in enumerate(titles) if t.startswith(p)) for p in order]
    assert positions == sorted(positions), titles


def test_a_changed_retention_is_a_new_release(backup_env):
    one = render.render(backup_env()).id
    two = render.render(backup_env({"repository": "sftp://u1@box.example:23//backups/jobagent",
                                    "keep": {"daily": 4, "weekly": 2}})).id
    assert one != two


def test_skip_backup_leaves_the_backup_out_but_not_the_script(backup_env):
    env = backup_env()
    plan = deploy.plan_deploy(env, render.render(env), FRESH, {}, "abc", deploy.Options(skip_backup=True))
    titles = [s.title for s in plan]
    assert any(t.startswith("install the scheduled backup's script") for t in titles)
    assert not any(t.startswith("backup before") for t in titles)
    [logged] = [s for s in plan if s.title.startswith("no backup before migrating")]
    assert list(logged.argv[:2]) == ["logger", "--tag"] and "WITHOUT a backup" in logged.argv[-1]
    assert titles.index(logged.title) < next(i for i, t in enumerate(titles) if t.startswith("migrate:"))
    assert "restic-pw-never-printed" not in plan.render()


def test_no_backup_section_no_backup_step(make_env):
    env = make_env("production")
    titles = [s.title for s in deploy.plan_deploy(env, render.render(env), FRESH, {}, "abc", deploy.Options())]
    assert not any("restic" in t or t.startswith("backup") for t in titles)
