# Redis without its password (`redis-cli ping`), then with it: stdin holds `AUTH "..."` and PING
# (the password never in argv). The arguments: the redis service's `docker ps` filter.
container redis "$@"
sec noauth
docker exec "$c" redis-cli ping 2>&1
sec auth
docker exec -i "$c" redis-cli 2>&1
