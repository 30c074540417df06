# Every sshd config file, the main one and its drop-ins, each after `#####file:PATH`.
for f in /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*; do
    [ -f "$f" ] || continue
    printf '#####file:%s\n' "$f"
    cat "$f" 2>/dev/null || echo '#####unreadable'
done
true
