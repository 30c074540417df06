# Shared by every fact script (opskit/facts/base.py puts it first): read-only helpers.

# sec NAME: start the part of the output that the parser finds as section NAME
sec() { printf '\n=====opskit:%s=====\n' "$1"; }

# container WHAT FILTER...: set $c to the first running container that `docker ps FILTER...`
# finds, or stop with exit code 3 naming WHAT
container() {
    what=$1; shift
    c=$(docker ps -q "$@" | head -n 1)
    [ -n "$c" ] || { echo "no running $what container" >&2; exit 3; }
}
