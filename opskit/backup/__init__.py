"""Backups proven by restores (issue 14): a dump taken on the server, sent off it with restic, and a
drill that restores it into a scratch database and checks it against its manifest.

    manifest.py   pure: what a backup says about itself (JSON in, JSON out, validated)
    restic.py     pure: restic's argv and the container it runs in (no secret in argv or env)
    plan.py       steps as data: dump -> manifest -> restic backup -> forget --prune
    drill.py      steps as data + a pure verdict: restore -> checks -> scratch database dropped
    snapshots.py  pure: `restic snapshots --json` -> the list `invoke db.backups` prints
    schedule.py   pure: the backup plan as the script a systemd timer runs, and its units
    dump.sh, census.sql, ui_select.sql   what runs on the server, kept as real files

Nothing here opens a connection: the runner runs the plans (`opskit.runner`).
"""
