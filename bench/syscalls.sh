#!/usr/bin/env bash
# bench/syscalls.sh — system calls per request of a proxy, by call (strace -c), in one client mode.
#
# usage: bench/syscalls.sh [close|ka|h2c|rate] [seconds]   (crossfade: CROSSFADE_BIN, default release)
# Needs strace, wrk, h2load and (with PEER) nginx or haproxy: bench/peer/setup.sh installs them.
#        PEER=nginx bench/syscalls.sh close 3         (nginx, one worker, same split and backends)
#        PEER=haproxy bench/syscalls.sh h2c 3         (HAProxy, one thread, as the harness runs it)
#
# The same setup as bench/profile.sh (bench/local.sh: two `crossfade sample-app` backends, a 90/10
# split, `crossfade proxy --workers 1`), warmed up with 500 requests, then `strace -f -c` attached
# to the proxy while `wrk -t1 -c16` runs for the given seconds (default 3), with
# `Connection: close` in the close mode (h2c: `h2load -c16 -m10`, HTTP/2 with prior knowledge, as
# the harness's h2c mode; the peers then listen h2c; rate: `h2load --h1 -c16` at a fixed RATE, default
# 20,000 req/s, as bench/latency.sh and the harness's fixed-rate pass, where nothing is batched).
# strace slows the proxy but does not change what it calls
# per request: the table's counts are divided by the requests wrk completed.
# docs/bench-2026-12-02f-close.md uses it (crossfade 12.3 → 10.2 calls per request, nginx 10.0).
set -euo pipefail
MODE=${1:-close}; SECS=${2:-3}
case $MODE in close|ka|h2c|rate) ;; *) echo "mode '$MODE': expected close, ka, h2c or rate" >&2; exit 2 ;; esac
h2=; [ "$MODE" = h2c ] && h2=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CROSSFADE_BIN:-$ROOT/target/release/crossfade}   # also runs the backends
[ -x "$BIN" ] || { echo "no crossfade binary at $BIN: cargo build --release, or set CROSSFADE_BIN" >&2; exit 1; }
dir=$(mktemp -d /tmp/crossfade-syscalls.XXXXXX)
. "$ROOT/bench/local.sh"
local_setup "" ""
# The backends first: nginx marks an upstream down for 10 s after a refused connect.
wait_backends
if [ -n "${PEER:-}" ]; then
  peer_cmd "$PEER" "$h2" || exit 2
  "${peer[@]}" & proxy=$!
else
  RUST_LOG=warn "$BIN" proxy "$dir/proxy.yaml" --workers 1 >"$dir/proxy.log" 2>&1 & proxy=$!
fi
pids+=($proxy)
protocol=(--h1)
if [ -n "$h2" ]; then
  protocol=(-m 10)
  wait_proxy_h2c 100
else
  wait_proxy 100
fi
header=(); [ "$MODE" = close ] && header=(-H 'Connection: close')
h2load "${protocol[@]}" -n 500 -c 16 "http://127.0.0.1:$listen/" >/dev/null
strace -f -c -o "$dir/strace.txt" -p "$proxy" 2>/dev/null & tracer=$!
sleep 1
if [ -n "$h2" ]; then
  h2load -c16 -m10 -D "$SECS" "http://127.0.0.1:$listen/" >"$dir/h2load.txt"
  requests=$(awk '/^requests:/ { print $8; exit }' "$dir/h2load.txt")
elif [ "$MODE" = rate ]; then
  h2load --h1 -c16 --rps=$((${RATE:-20000} / 16)) -D "$SECS" "http://127.0.0.1:$listen/" >"$dir/h2load.txt"
  requests=$(awk '/^requests:/ { print $8; exit }' "$dir/h2load.txt")
else
  wrk -t1 -c16 -d"${SECS}s" "${header[@]}" "http://127.0.0.1:$listen/" >"$dir/wrk.txt"
  requests=$(awk '/requests in/ { print $1; exit }' "$dir/wrk.txt")
fi
kill -INT "$tracer"; wait "$tracer" || true
echo "${PEER:-crossfade} $MODE: $requests requests; system calls per request:"
awk -v n="$requests" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
    printf "  %-12s %6.2f\n", $NF, $4 / n; sum += $4 }
  END { printf "  %-12s %6.2f\n", "total", sum / n }' "$dir/strace.txt"
