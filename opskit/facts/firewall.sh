# The firewall in force: the loaded nftables ruleset (`nft -j list ruleset`), whether the unit
# that loads it at boot is enabled and active, and what the ruleset file would give when loaded
# ALONE: read in a network namespace of its own (unshare), so nothing on the host changes.
# $1: the unit (nftables.service); $2: the ruleset file (optional). No nft: `!absent`.
unit=$1 conf=${2:-}
has_nft=no
command -v nft >/dev/null 2>&1 && has_nft=yes

sec loaded
if [ "$has_nft" = no ]; then
    echo '!absent'
elif out=$(nft -j list ruleset 2>/dev/null); then
    printf '%s\n' "$out"
else
    printf '!failed %s\n' "$(nft -j list ruleset 2>&1 >/dev/null)"
fi

sec unit
enabled=$(systemctl is-enabled "$unit" 2>/dev/null) || true
active=$(systemctl is-active "$unit" 2>/dev/null) || true
printf 'enabled=%s\nactive=%s\n' "$enabled" "$active"

sec file
if [ -n "$conf" ] && [ -f "$conf" ] && [ "$has_nft" = yes ]; then
    unshare --net sh -c '
        err=$(nft -f "$1" 2>&1) || { printf "!failed %s\n" "$err"; exit 0; }
        nft -j list ruleset 2>/dev/null || echo "!failed nft -j list ruleset"' file "$conf" \
        || echo '!failed unshare --net'
fi
true
