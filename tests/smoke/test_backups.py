"""Backups that exist and are proven: the newest snapshot in the off-server repository is younger
than the inventory's `backup.max_age`, and the latest restore drill (`invoke db.restore`) passed.
An environment without a `backup:` section has nothing to check here."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from .checks import problem

pytestmark = pytest.mark.backups


def _skip_without_backups(env):
    if env.backup is None:
        pytest.skip(f"{env.name} has no `backup:` section: no backups are taken")


def test_newest_backup_is_younger_than_max_age(env, backups, clock):
    _skip_without_backups(env)
    found, _ = backups
    fix = f"invoke db.backup -e {env.name} (and `systemctl status opskit-backup.timer` on the server)"
    assert found, problem(f"{env.backup.repository} holds no backup of {env.project}", fix)
    newest = found[0]
    now = datetime.fromtimestamp(clock.server, UTC)
    age = (now - newest.time).total_seconds()
    limit = env.backup.max_age.seconds
    assert age <= limit, problem(
        f"the newest off-server backup ({newest.short_id}, {newest.time:%Y-%m-%d %H:%M} UTC) is {age / 3600:.1f} h "
        f"old, more than backup.max_age ({limit / 3600:.1f} h)", fix)


def test_latest_restore_drill_passed(env, backups):
    _skip_without_backups(env)
    _, drill = backups
    fix = f"invoke db.restore -e {env.name}"
    assert drill is not None, problem(f"no restore drill has run on {env.name}: a backup is proven only by "
                                      "restoring it", fix)
    assert drill.ok, problem(f"the latest restore drill (snapshot {drill.snapshot[:8]}, {drill.time or 'time ?'}) "
                             f"failed at {drill.failed}: {drill.detail}", fix)
