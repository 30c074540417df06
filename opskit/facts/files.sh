# Each path given: `#####file:PATH`, then `mode owner group` (or `missing`) and its content in
# base64 (binary-safe; the files read this way are configuration, never secrets).
for f in "$@"; do
    printf '#####file:%s\n' "$f"
    if [ -f "$f" ]; then
        stat -c '%a %U %G' "$f"
        base64 -w0 "$f" 2>/dev/null || echo '!unreadable'
        echo
    else
        echo missing
    fi
done
