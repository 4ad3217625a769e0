#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, then every test.
# Tests that need root and network namespaces run when this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings
# The controller's end-to-end test drives the real switch-agent binary, which
# `cargo test` builds (switch-agent has integration tests) before any test runs.
target_dir="${CARGO_TARGET_DIR:-target}"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"
export TALARIA_SWITCH_AGENT="$target_dir/debug/switch-agent"
cargo test --locked
