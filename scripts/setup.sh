#!/usr/bin/env bash
# Installs everything talaria needs on a Debian 12 machine, and nothing twice:
# a second run with everything present takes a second or two.
#
#   apt packages  the tools tests and the lab drive (ip, ethtool, iptables,
#                 nft, ipvsadm, tcpdump, mininet with bridge-utils) and python3-venv
#                 for the P4Runtime interop tools
#   rust-src      for the nightly toolchain, used only to build eBPF crates
#   bpf-linker    0.10.4, which links with the nightly's own LLVM
#   p4-toolchain  the runtime packages (apt-runtime.txt) of a relocatable
#                 p4c + bmv2 folder, when there is one: $TALARIA_P4_TOOLCHAIN,
#                 $P4_TOOLCHAIN, or ../shared/p4-toolchain beside the repo
#
# Must run as root (apt). Idempotent.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

apt_packages=(iproute2 ethtool iptables nftables ipvsadm tcpdump procps util-linux python3-venv python3-pip mininet bridge-utils)

# p4c and bmv2 are in no registry; a relocatable build of them lists the
# Debian packages its binaries load.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for dir in "${TALARIA_P4_TOOLCHAIN:-}" "${P4_TOOLCHAIN:-}" "$repo/../shared/p4-toolchain"; do
    if [[ -n "$dir" && -f "$dir/apt-runtime.txt" ]]; then
        log "p4 toolchain in $(cd "$dir" && pwd): adding its runtime packages"
        mapfile -t p4_runtime < <(grep -v '^\s*\(#\|$\)' "$dir/apt-runtime.txt")
        apt_packages+=("${p4_runtime[@]}")
        break
    fi
done
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    log "no cargo on PATH: install rustup first (https://rustup.rs)"
    exit 1
fi
for component in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
if ! rustup toolchain list | grep -q '^nightly'; then
    log "rustup: installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "rustup: adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi

want_linker=0.10.4
if [[ "$(bpf-linker --version 2>/dev/null)" != *"$want_linker"* ]]; then
    log "cargo: installing bpf-linker $want_linker"
    cargo install --locked "bpf-linker@$want_linker"
fi

# Python P4Runtime tools (p4runtime-shell, finsy), each in its own venv under .cache/.
"$(dirname "${BASH_SOURCE[0]}")/python-tools.sh"
