#!/usr/bin/env bash
# Runs the talaria lab with real bmv2 (simple_switch_grpc) as the switch, in
# place of switch-agent:
#
#   1. compiles p4/talaria.p4 with p4c (v1model: bmv2 JSON + P4Info) into
#      bmv2-testbed/build/,
#   2. builds the lab and the talaria components,
#   3. runs the lab demo with `--switch bmv2`: simple_switch_grpc on the
#      switch netns ports (p<i> = P4 port i+1, offloads off on every veth),
#      the controller pushing the p4c JSON and P4Info over P4Runtime, the
#      node agents, HTTP and UDP echo to ClusterIPs, a results table,
#   4. with --tests, also runs the lab's end-to-end tests (every mode) on
#      bmv2.
#
# Where p4c or simple_switch_grpc is not installed (they are in no package
# registry this project can use), it says so and exits 0 ("skipped").
#
#   bmv2-testbed/run.sh [--tests] [demo options, e.g. --keep]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bmv2-testbed] %s\n' "$*" >&2; }

missing=()
for tool in p4c simple_switch_grpc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    log "SKIPPED: not installed: ${missing[*]} (bmv2 and p4c are not packaged for this machine; install them from p4lang to run this testbed)"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    log "run as root: the lab creates network namespaces"
    exit 1
fi
tests=0
if [[ "${1:-}" == "--tests" ]]; then
    tests=1
    shift
fi

scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

out="$PWD/bmv2-testbed/build"
mkdir -p "$out"
log "compiling p4/talaria.p4 with $(p4c --version 2>&1 | head -1)"
p4c --target bmv2 --arch v1model --p4runtime-files "$out/talaria.p4info.txtpb" -o "$out" p4/talaria.p4

log "building the lab and the talaria components (release)"
cargo build --release --locked -p talaria-lab -p talaria-switch -p talaria-node -p talaria-controller
target_dir="${CARGO_TARGET_DIR:-target}"

export TALARIA_LAB_SWITCH=bmv2 TALARIA_BMV2_DIR="$out"
"$target_dir/release/talaria-lab" demo "$@"
if ((tests)); then
    log "lab end-to-end tests on bmv2"
    cargo test --release --locked -p talaria-lab --test e2e
fi
