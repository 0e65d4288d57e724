#!/usr/bin/env bash
# bench/idle.sh — resident memory of `crossfade proxy` holding N idle keep-alive client connections.
#
# usage: bench/idle.sh [connections]          (default 10000; about a minute)
#
# Two `crossfade sample-app` backends, `crossfade proxy --workers 1` (limits raised so that N
# connections are admitted and stay open for the run), then bench/idle_clients.py opens N
# connections in batches of 500 at once, sends one GET on each (so each is a keep-alive connection
# that has served a request) and keeps them all open. Prints the proxy's RSS (VmRSS, /proc) before
# and with the N connections, per connection, and the proxy's open file descriptors. The upstream
# connections those requests used stay open in the pool's idle stacks (`idle_timeout: 600s` here,
# so the 4 s default does not close them during the run): as many as were in flight at once (up
# to one batch), not one per client connection, and their memory is counted too. Target
# (issue 3): ≤ 64 MiB at 10,000.
#
# Needs a hard limit of at least N+1000 open files: each client connection costs the proxy one
# descriptor, the idle upstream connections up to 500 more.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-10000}
BIN=${CROSSFADE_BIN:-$ROOT/target/release/crossfade}
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release --bin crossfade" >&2; exit 1; }
want=$((N + 1000))
ulimit -n "$want" 2>/dev/null || {
  echo "cannot raise the open-file limit to $want (hard limit $(ulimit -Hn)); try fewer connections" >&2
  exit 1
}

dir=$(mktemp -d /tmp/crossfade-idle.XXXXXX)
# shellcheck source=bench/local.sh
. "$ROOT/bench/local.sh"
local_setup "limits: { max_connections: $((N + 100)), max_requests: $((N + 100)), header_read_timeout: 600s }
upstream: { idle_timeout: 600s }"
# PROXY_GLIBC_TUNABLES: glibc's GLIBC_TUNABLES for the proxy alone (as bench/ours.sh).
tunables=(); [ -n "${PROXY_GLIBC_TUNABLES:-}" ] && tunables=(env "GLIBC_TUNABLES=$PROXY_GLIBC_TUNABLES")
RUST_LOG=warn "${tunables[@]}" "$BIN" proxy "$dir/proxy.yaml" --workers 1 >"$dir/proxy.log" 2>&1 & proxy=$!
pids+=($proxy)
wait_proxy 50
rss() { awk '/VmRSS/ {print $2}' "/proc/$proxy/status"; }
before=$(rss)
python3 "$ROOT/bench/idle_clients.py" 127.0.0.1 "$listen" "$N" "$dir/ready" & clients=$!
pids+=($clients)
for _ in $(seq 600); do [ -e "$dir/ready" ] && break; sleep 0.2; done
[ -e "$dir/ready" ] || { echo "the clients did not get their connections up; see $dir" >&2; exit 1; }
sleep 2
with=$(rss)
open=$(curl -fsS "http://127.0.0.1:$admin/metrics" | awk '/^crossfade_client_connections / {print $2}')
echo "connections: $N requested, $(cat "$dir/ready") answered, crossfade_client_connections $open"
echo "RSS before: $((before / 1024)) MiB; with $N idle keep-alive connections: $((with / 1024)) MiB"
echo "per connection: $(( (with - before) * 1024 / N )) bytes (target: 64 MiB in all at 10,000)"
echo "proxy's open file descriptors: $(find "/proc/$proxy/fd" -mindepth 1 | wc -l) (client connections, idle upstream connections, listeners)"
