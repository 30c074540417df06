# The kernel's TCP socket tables (listeners are the lines in state 0A).
sec tcp
cat /proc/net/tcp
sec tcp6
cat /proc/net/tcp6 2>/dev/null
true
