# Whether the clock is synchronised, as each time service tells it ("unavailable": not there).
sec timedatectl
timedatectl show -p NTPSynchronized --value 2>/dev/null || echo unavailable
sec chrony
chronyc -n tracking 2>/dev/null | grep -i 'leap status' || echo unavailable
# adjtimex(2) with modes=0 only reads; 5 (TIME_ERROR) means the kernel clock is unsynchronised
sec adjtimex
perl -e '$b="\0" x 208; print syscall(159, $b), "\n"' 2>/dev/null || echo unavailable
# a container keeps the kernel's clock of its host, and time services do not run there
sec virtualization
systemd-detect-virt --container 2>/dev/null || echo none
sec timesyncd
systemctl is-enabled systemd-timesyncd 2>/dev/null || echo unavailable
