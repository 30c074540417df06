# Caddy's certificate lines (loggers tls.obtain and tls.renew) from the running caddy container's
# log, both streams; the arguments: the caddy service's `docker ps` filter. Only these lines travel:
# request logs can be large, and a certificate event is rare.
container caddy "$@"
docker logs "$c" 2>&1 | grep -F -e '"logger":"tls.obtain"' -e '"logger":"tls.renew"' || true
