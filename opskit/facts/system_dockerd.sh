# dockerd: installed or not, its unit's state, and what the running daemon reports of its settings.
sec dockerd
command -v dockerd || echo '!absent'
sec active
systemctl is-active docker 2>/dev/null
sec info
if command -v docker >/dev/null 2>&1; then
    timeout 20 docker info --format '{{json .}}' 2>/dev/null
else
    echo '!absent'
fi
true
