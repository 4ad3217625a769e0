#!/usr/bin/env bash
# The whole test suite: set-up, formatting, lints, then every test.
# Tests that need root and network namespaces run when this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
