# $@: package names (none: skip). Each installed one: `NAME VERSION`; the apt mirror of the distribution's own
# sources (deb822 first, then the one-line format), for sources opskit adds on the same mirror.
sec installed
[ "$#" -eq 0 ] || dpkg-query -W -f='${db:Status-Status} ${Package} ${Version}\n' "$@" 2>/dev/null | awk '$1 == "installed" {print $2, $3}'
sec mirror
{ awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/ubuntu.sources 2>/dev/null
  awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit} $1 == "deb" && $2 ~ /^\[/ {print $3; exit}' /etc/apt/sources.list 2>/dev/null
} | head -n 1
sec os_release
cat /etc/os-release 2>/dev/null
sec virtualization
systemd-detect-virt --container 2>/dev/null || echo none
