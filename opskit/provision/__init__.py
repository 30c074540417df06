"""`invoke provision`: from a bare VPS (root and a key, as the provider hands it over) to the host
that `invoke deploy` and the smoke suite expect, converged item by item.

Items, in the order they run (each a module here; see `item.py` for what an item is):
    memory     swap file, vm.swappiness, journald's size cap
    dockerd    /etc/docker/daemon.json, written before Docker is installed so its first start uses it
    packages   Docker Engine + Compose v2 + buildx, sudo, time sync, and every item's packages
    accounts   the deploy user: its keys, the docker group, sudo, the release folder
    upgrades   unattended security upgrades, Docker's packages held back from them
    firewall   nftables default-deny, Docker-published ports included (guarded: proven by a new login)
    sshd       the hardened drop-in: after it root cannot log in (guarded likewise)
    backup_timer  the systemd timer of the scheduled backup (with `backup:`; runs as the deploy user)

A run reads every item's facts in one round trip, prints what differs, runs the steps through the
one runner, then reads again and fails unless every item has converged. A second run finds no
difference and runs no step. It logs in as the deploy user with sudo when that works (a host it
provisioned before), and otherwise as `provision.bootstrap_user` (the provider's root).
"""
