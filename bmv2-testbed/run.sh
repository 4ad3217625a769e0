#!/usr/bin/env bash
# Runs the talaria lab with real bmv2 (simple_switch_grpc) as the switch, in
# place of switch-agent:
#
#   1. finds p4c and simple_switch_grpc where the lab will look for them:
#      a toolchain folder (bin/, lib/) in $TALARIA_P4_TOOLCHAIN or
#      $P4_TOOLCHAIN, shared/p4-toolchain beside the repository, or both
#      binaries on PATH (your own installation),
#   2. builds the lab and the talaria components (release),
#   3. runs `talaria-lab --switch bmv2 demo`: the lab compiles p4/talaria.p4
#      with that p4c into its run directory, starts simple_switch_grpc
#      --device-id 1 on the switch netns ports (p<i> = P4 port i+1,
#      offloads off on every veth), and the controller pushes p4c's JSON and
#      P4Info over P4Runtime before it writes the tables; then the node
#      agents, HTTP and UDP echo to ClusterIPs, a results table,
#   4. with --tests, also runs the lab's bmv2 tests: every mode end to end,
#      the demo, and mininet over bmv2.
#
# Without the toolchain it says so and exits 0 (skipped), except under
# CI=true, where that is a failure (exit 1).
#
#   bmv2-testbed/run.sh [--tests] [demo options, e.g. --keep --seconds 5]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[bmv2-testbed] %s\n' "$*" >&2; }

tests=0
if [[ "${1:-}" == "--tests" ]]; then
    tests=1
    shift
fi

# The same places, in the same order, as talaria_preflight::P4Toolchain:
# the first of the two variables that is set, else the folder beside the
# repository, else PATH.
is_toolchain() { [[ -x "$1/bin/p4c" && -x "$1/bin/simple_switch_grpc" ]]; }
toolchain=""
for var in TALARIA_P4_TOOLCHAIN P4_TOOLCHAIN; do
    dir="${!var:-}"
    [[ -n "$dir" ]] || continue
    if ! is_toolchain "$dir"; then
        log "\$$var=$dir has no bin/p4c and bin/simple_switch_grpc"
        exit 1
    fi
    toolchain=$(cd "$dir" && pwd)
    break
done
beside="$(dirname "$PWD")/shared/p4-toolchain"
if [[ -z "$toolchain" ]] && is_toolchain "$beside"; then
    toolchain=$(cd "$beside" && pwd)
fi
if [[ -n "$toolchain" ]]; then
    export TALARIA_P4_TOOLCHAIN="$toolchain"
    log "p4 toolchain: $toolchain"
elif command -v p4c >/dev/null && command -v simple_switch_grpc >/dev/null; then
    log "p4 toolchain: $(command -v p4c) and $(command -v simple_switch_grpc) on PATH"
else
    why="no p4c and simple_switch_grpc: no toolchain folder in \$TALARIA_P4_TOOLCHAIN, \$P4_TOOLCHAIN or $beside, and not both on PATH (install p4c and bmv2 from p4lang)"
    if [[ -n "${CI:-}" && "${CI}" != 0 && "${CI}" != false ]]; then
        log "FAILED: CI=true and $why"
        exit 1
    fi
    log "SKIPPED: $why"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    log "run as root: the lab creates network namespaces"
    exit 1
fi

scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

log "building the lab and the talaria components (release)"
cargo build --release --locked -p talaria-lab -p talaria-node -p talaria-controller
target_dir="${CARGO_TARGET_DIR:-target}"

"$target_dir/release/talaria-lab" --switch bmv2 demo "$@"
if ((tests)); then
    log "the lab's bmv2 tests: every mode end to end, the demo, mininet"
    cargo test --release --locked -p talaria-lab --test e2e --test mininet -- bmv2
fi
