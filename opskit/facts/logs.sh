# The lines of every project container's log that hold a known signature (grep runs here: only
# matches travel), each container after `#####container:SERVICE|NAME|ONEOFF`.
# $1, $2: the service and one-off labels; $3: lines kept per container; $4: the signatures, one
# a line. The other arguments: the project's `docker ps` filter.
service_label=$1 oneoff_label=$2 keep=$3 patterns=$4
shift 4
for id in $(docker ps -aq "$@"); do
    printf '#####container:%s\n' "$(docker inspect --format \
        "{{index .Config.Labels \"$service_label\"}}|{{.Name}}|{{index .Config.Labels \"$oneoff_label\"}}" "$id")"
    docker logs --timestamps "$id" 2>&1 | grep -n -F "$patterns" | tail -n "$keep"
done
