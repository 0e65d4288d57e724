#!/usr/bin/env bash
# Runs every test of the repository on a fresh Debian machine with the Rust toolchain:
# formatting, lints, unit tests and the integration tests in tests/ (real sockets, real processes).
# Installs what the tests need first; today that is nothing beyond the Rust toolchain itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes API emulator for tests/it/kube: kmock 0.8 (PyPI) in a venv under target/, created once
# (a fast no-op when present). The tests start tests/kube/kmock_server.py with this Python; under
# CI=true they fail rather than skip when it is missing.
install_kmock() {
  local venv=target/kmock-venv
  if ! "$venv/bin/python" -c 'import importlib.metadata as m; assert m.version("kmock") == "0.8"' 2>/dev/null; then
    echo "== installing kmock 0.8 into $venv (Kubernetes API emulator for tests/it/kube)"
    if ! python3 -m venv --clear "$venv" 2>/dev/null; then
      local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
      $sudo apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv --clear "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'kmock==0.8'
  fi
  export CROSSFADE_KMOCK_PYTHON="$PWD/$venv/bin/python"
  "$CROSSFADE_KMOCK_PYTHON" tests/kube/kmock_server.py --check-hooks
}

install_kmock

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
