#!/usr/bin/env bash
# The one-command talaria lab demo: installs what is needed (scripts/setup.sh),
# builds the lab and the talaria components, then runs `talaria-lab demo`:
# 1 switch (switch-agent), 3 nodes, 4 pods per node, 20 Services, HTTP and UDP
# echo from pods to ClusterIPs, a results table, teardown.
#
#   scripts/demo.sh            # run and tear down
#   scripts/demo.sh --keep     # keep the lab up; remove it with
#                              #   target/release/talaria-lab down
#
# Must run as root (network namespaces, eBPF). Extra arguments go to
# `talaria-lab demo` (see `talaria-lab demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[demo] %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "run as root: the lab creates network namespaces and loads eBPF"
    exit 1
fi

scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

log "building the lab and the talaria components (release)"
cargo build --release --locked -p talaria-lab -p talaria-switch -p talaria-node -p talaria-controller

target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/talaria-lab" demo "$@"
