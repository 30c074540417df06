# Free disk space and inodes (`df -P`) of the folder $1 (or its nearest existing parent), of /,
# and, when $2 is `docker`, of Docker's data root.
p=$1
while [ ! -d "$p" ]; do p=$(dirname "$p"); done
sec folder
echo "$p"
r=""
if [ "$2" = docker ]; then
    r=$(docker info --format '{{.DockerRootDir}}' 2>/dev/null)
    sec docker_root
    echo "$r"
fi
for kind in disk inodes; do
    sec "$kind"
    [ "$kind" = disk ] && flag=-Pk || flag=-Pi
    for x in "$p" / "$r"; do
        [ -n "$x" ] && printf '#####path:%s\n' "$x" && df "$flag" "$x" | tail -n 1
    done
done
true
