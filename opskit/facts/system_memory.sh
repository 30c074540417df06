# Swap, vm.swappiness and journald's cap: what the files say and what is in force. In a container
# /proc/swaps and /proc/sys/vm are the shared kernel's, not the box's.
sec swaps
cat /proc/swaps 2>/dev/null
# $1: the swap file: `size mode owner group`, then its swap signature (the last 10 bytes of the
# first page: SWAPSPACE2 once mkswap made it a swap area), or `missing`
sec swapfile
if [ -f "$1" ]; then
    stat -c '%s %a %U %G' "$1"
    page=$(getconf PAGESIZE 2>/dev/null || echo 4096)
    dd if="$1" bs=1 skip=$((page - 10)) count=10 2>/dev/null | tr -cd '[:alnum:]'
    echo
else
    echo missing
fi
sec swappiness
cat /proc/sys/vm/swappiness 2>/dev/null
# journald.conf and its drop-ins in the order journald reads them (each after `# /PATH`)
sec journald_config
systemd-analyze cat-config systemd/journald.conf 2>/dev/null || echo '!absent'
# what the running journald took as its cap: it says so each time it opens the system journal
sec journald_running
journalctl -b -u systemd-journald --no-pager -o cat 2>/dev/null | grep -E '^System Journal \(' | tail -n 1
true
