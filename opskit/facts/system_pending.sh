# What an upgrade would install now, from the package lists APT last fetched: read-only (no
# `apt-get update`, no download, no lock). Lines: `Inst NAME [OLD] (NEW LABEL:VERSION/SUITE [ARCH])`.
apt-get --simulate --quiet --quiet -o Debug::NoLocking=true upgrade 2>/dev/null | grep '^Inst ' || true
