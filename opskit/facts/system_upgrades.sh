# The unattended-upgrades policy as APT reads it: every file under /etc/apt/apt.conf* merged by
# `apt-config dump`, so a later file that overrides ours shows here; one `KEY=VALUE` a line.
sec apt
if command -v apt-config >/dev/null 2>&1; then
    apt-config dump --format '%f=%v%n' | grep -E '^(APT::Periodic|Unattended-Upgrade)::' || true
else
    echo '!absent'
fi
sec program
command -v unattended-upgrade || echo '!absent'
# the timers that run `apt-get update` and unattended-upgrade (the apt package ships them enabled)
sec timers
for t in apt-daily.timer apt-daily-upgrade.timer; do
    printf '%s %s\n' "$t" "$(systemctl is-enabled "$t" 2>/dev/null)"
done
true
