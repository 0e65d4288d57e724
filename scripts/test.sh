#!/usr/bin/env bash
# Runs every test of the repository on a fresh Debian machine with the Rust toolchain:
# formatting, lints, unit tests and the integration tests in tests/ (real sockets, real processes).
# Installs what the tests need first; today that is nothing beyond the Rust toolchain itself.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
