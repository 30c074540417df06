# The releases on disk: where the `current` link $1 points, the folders in $2 (oldest first),
# the deploy lock's info file $3 (there only while a deploy holds the lock; its time is the lease),
# and the sha256 of each file in Caddy's config folder $4 (what the running Caddy was given).
sec current
readlink "$1" 2>/dev/null
sec releases
ls -1tr "$2" 2>/dev/null
sec lock
cat "$3" 2>/dev/null
sec lock_renewed
stat -c %Y "$3" 2>/dev/null
sec caddy_files
[ -d "$4" ] && (cd "$4" && find . -maxdepth 1 -type f -exec sha256sum {} + 2>/dev/null)
true
