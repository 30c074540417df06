# The running Caddy config (its admin API, inside the container) and, when $1 is `root`, the root
# certificate of Caddy's local CA (`tls: internal`). The other arguments: the caddy service's
# `docker ps` filter.
want_root=$1
shift
container caddy "$@"
sec config
docker exec "$c" wget -qO- http://127.0.0.1:2019/config/
if [ "$want_root" = root ]; then
    sec root
    docker exec "$c" cat /data/caddy/pki/authorities/local/root.crt
fi
