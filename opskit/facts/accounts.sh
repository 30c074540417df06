# $1: the deploy user, $2: the release folder. Its passwd entry, groups, and the folder's owner and mode.
sec passwd
getent passwd "$1" || true
sec groups
id -nG "$1" 2>/dev/null || true
sec remote_dir
stat -c '%U %G %a' "$2" 2>/dev/null || echo missing
