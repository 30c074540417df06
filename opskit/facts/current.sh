# The current release in detail: its link and folder, manifest, file modes and hashes, config
# files, and the lock. $1: the `current` link, $2: the releases folder, $3: Caddy's config
# folder, $4: the deploy lock's info file, $5: the secret files the containers mount.
cur=$1 releases=$2 caddy=$3 lock=$4 secrets=$5
real=$(readlink -f "$cur")
sec current
readlink "$cur"
sec real
echo "$real"
sec manifest
cat "$cur/manifest.json" 2>&1
sec stat
stat -c '%a|%U|%G|%F|%n' "$real" "$real/secrets" "$real"/secrets/* "$secrets" "$secrets"/* \
    "$real/docker-compose.yml" "$real/Caddyfile" "$caddy/Caddyfile" "$releases" 2>&1
sec sha256
(cd "$real" 2>/dev/null && find . -type f ! -name manifest.json -exec sha256sum {} + 2>&1)
sec live_caddyfile_sha256
sha256sum "$caddy/Caddyfile" 2>&1
sec compose_file
cat "$real/docker-compose.yml" 2>&1
sec caddyfile
cat "$real/Caddyfile" 2>&1
sec live_caddyfile
cat "$caddy/Caddyfile" 2>&1
sec lock
cat "$lock" 2>/dev/null
true
