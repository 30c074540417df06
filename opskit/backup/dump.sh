# One backup set on the server: <root>/<stamp>/{db.dump, db.dump.sha256, manifest.json, tags}, mode
# 0600 in 0700 folders. Built under a hidden temp name and renamed whole at the end: a failure
# anywhere leaves nothing named like a good set (the temp folder is removed on the way out).
# $1 root  $2 stamp  $3 release  $4 role  $5 database; the rest: the command that runs psql where
# Postgres runs (`docker compose ... exec -T postgres`). stdin: backup.sql + census.sql.
set -eu
root=$1 stamp=$2 release=$3 role=$4 db=$5
shift 5
umask 077
mkdir -p "$root"
chmod 0700 "$root"
final=$root/$stamp partial=$root/.$stamp.partial
if [ -e "$final" ]; then echo "backup set $final exists already" >&2; exit 1; fi
rm -rf "$partial"
# on the way out before the rename: what psql and pg_dump said, then nothing left behind
trap '[ ! -f "$partial/log" ] || grep -v "^opskit-census " "$partial/log" >&2; rm -rf "$partial"' EXIT
mkdir "$partial"
time=$(date -u +%Y-%m-%dT%H:%M:%SZ)
# psql's stderr goes through a pipe: backup.sql reopens it (`\o /dev/stderr`), which on a plain
# file would start writing over what pg_dump had put there
{ "$@" psql -X -q --no-password --username "$role" --dbname "$db" -f - 2>&1 >"$partial/db.dump"
  echo "opskit-psql-exit $?"; } | cat >"$partial/log"
if ! grep -qx 'opskit-psql-exit 0' "$partial/log"; then
    echo "psql stopped: no backup set" >&2; exit 1
fi
if ! grep -qx 'opskit-dump-exit 0' "$partial/log"; then
    echo "pg_dump failed: no backup set" >&2; exit 1
fi
census=$(sed -n 's/^opskit-census //p' "$partial/log")
revision=$(sed -n 's/^opskit-revision //p' "$partial/log")
case $census in '{'*'}') ;; *) echo "no census from psql: no backup set" >&2; exit 1;; esac
size=$(wc -c <"$partial/db.dump")
[ "$size" -gt 0 ] || { echo "pg_dump wrote nothing: no backup set" >&2; exit 1; }
sum=$(sha256sum "$partial/db.dump" | cut -d' ' -f1)
printf '%s  db.dump\n' "$sum" >"$partial/db.dump.sha256"
# release and stamp are plain words (checked when the plan was made); census is Postgres's own JSON
printf '{"format": 1, "time": "%s", "release": "%s", "dump": {"file": "db.dump", "format": "custom", "size": %s, "sha256": "%s"}, %s\n' \
    "$time" "$release" "$size" "$sum" "${census#\{}" >"$partial/manifest.json"
# restic tags: one per line; a comma would split a tag in two
printf 'release=%s\nrevision=%s\nsize=%s\n' "$release" "$(printf %s "${revision:-none}" | tr , +)" "$size" >"$partial/tags"
rm "$partial/log"
mv "$partial" "$final"
trap - EXIT
echo "opskit-set $final"
cat "$final/manifest.json"
