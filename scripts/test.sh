#!/usr/bin/env bash
# Runs every test of the repository on a fresh Debian machine with the Rust toolchain:
# formatting, lints, unit tests and the integration tests in tests/ (real sockets, real processes).
# Installs what the tests need first (each a fast no-op when present): the kmock API emulator (below),
# Debian's `prometheus` package (promtool for the alert rules, and the server that
# tests/it/observability.rs starts), as binaries only, no service, the real HTTP clients of
# tests/it/clients.rs (curl, nghttp2-client for h2load, wrk), and chromium for tests/it/report.rs.
# It then exports CROSSFADE_REQUIRE_TOOLS=1: a test whose real tool (those, git, the kmock venv) is
# missing fails rather than skips (tests/it/support's tools_required, proxy/tests/it/support.rs's
# have_tool); CI=true does the same. A bare `cargo test` elsewhere skips such a test loudly.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes API emulator for tests/it/kube: kmock 0.8 (PyPI) in a venv under target/, created once
# (a fast no-op when present). The tests start tests/kube/kmock_server.py with this Python; with
# CROSSFADE_REQUIRE_TOOLS (below) or CI=true they fail rather than skip when it is missing.
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

# Installs the `prometheus` package once (fast no-op when promtool is there). A temporary policy-rc.d
# (exit 101: "action forbidden") keeps the postinst from starting the service, which is then disabled.
install_prometheus() {
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  local created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  echo "== installing prometheus (Debian package, for promtool and tests/it/observability.rs)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ "$created_policy" = 1 ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
  $sudo systemctl disable prometheus >/dev/null 2>&1 || true
  $sudo update-rc.d prometheus disable >/dev/null 2>&1 || true
  $sudo systemctl stop prometheus >/dev/null 2>&1 || true
}

install_prometheus
export CROSSFADE_REQUIRE_PROMETHEUS=1

# The real clients of tests/it/clients.rs (and case C20): curl, h2load (nghttp2-client), wrk and
# HAProxy (an L4 balancer sending the PROXY protocol), from Debian, once (a fast no-op when all four
# are there). With CROSSFADE_REQUIRE_TOOLS (below) or CI=true those tests fail without them.
install_clients() {
  command -v curl >/dev/null 2>&1 && command -v h2load >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1 &&
    command -v haproxy >/dev/null 2>&1 && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "== installing curl, nghttp2-client, wrk and haproxy (Debian packages, for tests/it/clients.rs)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends curl nghttp2-client wrk haproxy >/dev/null
}

install_clients

# Headless Chromium for tests/it/report.rs (renders a rollout report to a PNG and a DOM), from Debian,
# once (a fast no-op when present). With CROSSFADE_REQUIRE_TOOLS (below) or CI=true that test fails
# without it.
install_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "== installing chromium (Debian package, for tests/it/report.rs)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
}

install_chromium
# Every tool is installed: from here on a test that finds one missing fails (session 44).
export CROSSFADE_REQUIRE_TOOLS=1
echo "== promtool"
promtool check rules deploy/prometheus/crossfade-rules.yaml
promtool test rules deploy/prometheus/crossfade-rules.test.yaml

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo doc"
# Every intra-doc link resolves, private items' docs included (they are the internal docs).
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --locked
echo "== cargo test"
# The whole output also goes to a log; on failure, every panic message is printed again at the end,
# where a truncated CI log still shows it.
test_log="$(mktemp)"
trap 'rm -f "$test_log"' EXIT
status=0
cargo test --workspace --locked 2>&1 | tee "$test_log" || status=$?
if [ "$status" -ne 0 ]; then
  echo "== cargo test failed (exit $status); the panics, again:"
  grep -A 6 "panicked at" "$test_log" | grep -v "^note: run with" | head -n 200 || true
fi
exit "$status"
