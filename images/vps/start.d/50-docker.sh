#!/bin/sh
# Docker on the simulated VPS, as systemd runs it on a real box: dockerd in the background, and
# answering before sshd lets anyone in. Called by vps-entrypoint with `start` or `stop`.
set -u

case "${1:-start}" in
start)
	# cgroup v2 hosts: move this container's processes into a child group so that dockerd may
	# hand controllers (memory, cpu) to the containers it runs (the nesting step of moby's dind)
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		mkdir -p /sys/fs/cgroup/init
		xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || :
		sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
			> /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || :
	fi
	# /run is not a tmpfs here: clear what a reboot would, or dockerd trusts a stale pid file
	rm -rf /run/docker.pid /run/docker /run/containerd /run/docker.sock
	dockerd >>/var/log/dockerd.log 2>&1 &
	tries=0
	until docker info >/dev/null 2>&1; do
		tries=$((tries + 1))
		if [ "$tries" -gt 120 ]; then
			# sshd still starts, so one can log in and look; vps.up reports the failure
			echo "[vps] dockerd did not answer within 60 s; last lines of /var/log/dockerd.log:" >&2
			tail -n 20 /var/log/dockerd.log >&2
			exit 0
		fi
		sleep 0.5
	done
	echo "[vps] docker $(docker version --format '{{.Server.Version}}') ready"
	;;
stop)
	# let the nested containers stop cleanly (Postgres flushes) before the VPS goes away
	pid=$(cat /run/docker.pid 2>/dev/null) || exit 0
	kill -TERM "$pid" 2>/dev/null || exit 0
	tries=0
	while kill -0 "$pid" 2>/dev/null && [ "$tries" -lt 40 ]; do
		tries=$((tries + 1))
		sleep 0.25
	done
	;;
esac
