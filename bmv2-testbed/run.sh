#!/usr/bin/env bash
# Runs the talaria lab with real bmv2 (simple_switch_grpc) as the switch,
# in place of switch-agent:
#
#   1. compiles p4/talaria.p4 with p4c (v1model, bmv2 JSON + P4Info),
#   2. brings up a lab topology (talaria-lab up --mode direct, which builds
#      the namespaces and pod servers),
#   3. starts simple_switch_grpc inside the lab's switch netns on its ports
#      (p0 -> port 1, p1 -> port 2, ...), with offloads turned off on those
#      veths (bmv2 reads them through libpcap),
#   4. points talaria-controller at it (P4Runtime 127.0.0.1:9559 in that netns),
#   5. runs the demo traffic and the packet scenarios against it.
#
# Where p4c or simple_switch_grpc is not installed (they are in no package
# registry this project can use), it says so and exits 0 ("skipped").
#
#   bmv2-testbed/run.sh [--keep]
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
    log "run as root"
    exit 1
fi

keep=0
[[ "${1:-}" == "--keep" ]] && keep=1
out=bmv2-testbed/build
mkdir -p "$out"
log "compiling p4/talaria.p4"
p4c --target bmv2 --arch v1model --p4runtime-files "$out/talaria.p4info.txtpb" -o "$out" p4/talaria.p4

cargo build --release --locked -p talaria-lab -p talaria-controller
lab=target/release/talaria-lab
up_out=$("$lab" up --mode direct)
echo "$up_out"
prefix=$(sed -n 's/^lab \(tl[0-9a-f]*\) is up.*/\1/p' <<<"$up_out")
[[ -n "$prefix" ]] || { log "could not bring the lab up"; exit 1; }
cleanup() { ((keep)) || "$lab" down "$prefix"; }
trap cleanup EXIT
sw="$prefix-sw"
run_dir="/run/talaria-lab/$prefix"

ports=()
for dev in $(ip -n "$sw" -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1); do
    n=${dev#p}
    ports+=(-i "$((n + 1))@$dev")
    ip netns exec "$sw" ethtool -K "$dev" tso off gso off gro off tx off >/dev/null 2>&1 || true
done
log "starting simple_switch_grpc on ${ports[*]}"
ip netns exec "$sw" simple_switch_grpc --no-p4 "${ports[@]}" -- --grpc-server-addr 127.0.0.1:9559 \
    >"$run_dir/logs/bmv2.log" 2>&1 &
echo $! >"$run_dir/bmv2.pid"
sleep 2
log "starting talaria-controller against bmv2"
ip netns exec "$sw" target/release/talaria-controller --manifests "$run_dir/manifests" \
    --switch bmv2=http://127.0.0.1:9559@1 --p4info "$out/talaria.p4info.txtpb" \
    >"$run_dir/logs/controller-bmv2.log" 2>&1 &
echo $! >"$run_dir/controller.pid"
sleep 3
log "traffic: pod-n0-0 -> ClusterIP 10.96.0.10:80"
ip netns exec "$prefix-n0p0" "$lab" load --proto http-short --target 10.96.0.10:80 --duration-ms 3000
for f in "$run_dir/bmv2.pid" "$run_dir/controller.pid"; do kill "$(cat "$f")" 2>/dev/null || true; done
