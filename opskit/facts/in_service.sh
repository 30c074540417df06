# Run a command in the running container of one compose service.
# $1: the service's `docker ps` filter, as one word list; $2: the service; then the command.
filter=$1 service=$2
shift 2
# shellcheck disable=SC2086  # the filter is a word list on purpose
container "$service" $filter
exec docker exec -i "$c" "$@"
