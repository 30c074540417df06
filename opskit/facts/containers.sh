# `docker inspect` of every container (running or not) that `docker ps -a "$@"` finds.
ids=$(docker ps -aq "$@")
# shellcheck disable=SC2086  # one argument per id
if [ -n "$ids" ]; then docker inspect $ids; else echo '[]'; fi
