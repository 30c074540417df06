# `sshd -T`: the settings sshd itself makes of its config files (includes expanded, first value
# wins, defaults filled in), under `effective`; or under `error` why it cannot say (it needs root
# to load the host keys, and a valid config); or `absent` when there is no sshd at all.
sshd=$(command -v sshd 2>/dev/null || true)
[ -n "$sshd" ] || [ ! -x /usr/sbin/sshd ] || sshd=/usr/sbin/sshd
if [ -z "$sshd" ]; then
    sec absent
    exit 0
fi
if out=$("$sshd" -T 2>&1); then
    sec effective
else
    sec error
fi
printf '%s\n' "$out"
