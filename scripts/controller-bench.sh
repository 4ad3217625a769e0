#!/usr/bin/env bash
# talaria-bench against a real switch-agent, each in its own place:
# switch-agent in a private network namespace with a private pin
# directory, the bench (which runs the controller in-process) in the same
# namespace, so nothing listens outside it.
#
#   scripts/controller-bench.sh [--dataplane ebpf|memory] [talaria-bench flags]
#
# Needs root. Builds the release binaries first.
set -euo pipefail
cd "$(dirname "$0")/.."

dataplane=ebpf
if [[ "${1:-}" == "--dataplane" ]]; then
    dataplane=$2
    shift 2
fi
cargo build --release --locked -p talaria-controller -p talaria-switch --bins >&2
bin="${CARGO_TARGET_DIR:-target}/release"

tag="ctlbench$$"
state=$(mktemp -d)
pin="/sys/fs/bpf/talaria-$tag"
agent=""
# Every step may fail (errexit is still on in the trap): none may stop the
# rest of the clean-up.
cleanup() {
    if [[ -n "$agent" ]]; then
        kill "$agent" 2>/dev/null || true
        wait "$agent" 2>/dev/null || true
    fi
    ip netns del "$tag" 2>/dev/null || true
    rm -rf "$state" "$pin" || true
}
trap cleanup EXIT
ip netns add "$tag"
ip -n "$tag" link set lo up
in_ns() { nsenter --net="/run/netns/$tag" "$@"; }

# nsenter execs the agent, so $! is the agent's own PID.
nsenter --net="/run/netns/$tag" "$bin/switch-agent" --dataplane "$dataplane" --no-metrics \
    --grpc-addr 127.0.0.1:9559 --state-dir "$state" --pin-dir "$pin" \
    >"$state/switch-agent.log" 2>&1 &
agent=$!
for _ in $(seq 50); do
    in_ns bash -c 'exec 3<>/dev/tcp/127.0.0.1/9559' 2>/dev/null && break
    sleep 0.1
done
echo "uptime: $(uptime)"
in_ns "$bin/talaria-bench" --switch http://127.0.0.1:9559 "$@"
awk '{printf "switch-agent CPU       %.2f s (user+system, whole run)\n", ($14+$15)/100}' "/proc/$agent/stat"
awk '/VmHWM/ {printf "switch-agent RSS       %.1f MB peak\n", $2/1024}' "/proc/$agent/status"
