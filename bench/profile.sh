#!/usr/bin/env bash
# bench/profile.sh — where `crossfade proxy` spends its instructions per request, by callgrind.
#
# usage: bench/profile.sh [requests]          (default 20000; a few minutes under valgrind)
#        PROFILE_ROUTE_YAML='shadow: { percent: 100 }' bench/profile.sh   (extra keys on the route)
#        PROFILE_YAML='access_log: /tmp/access.log' bench/profile.sh      (extra top-level keys)
#        FLOOR_BIN=target/release/examples/floor bench/profile.sh   (the floor instead of crossfade:
#        proxy/examples/floor.rs, `cargo build --release -p crossfade-proxy --example floor`)
#
# Two `crossfade sample-app` backends (blue, green), `crossfade proxy --workers 1` on a 90/10 split
# run under `valgrind --tool=callgrind`, and h2load --h1 sending `requests` GETs over 16 keep-alive
# connections. Prints instructions per request (total Ir / requests) and the top functions by
# inclusive and exclusive cost; the raw profile stays in the printed directory for
# `callgrind_annotate` or KCachegrind.
#
# Callgrind counts instructions, not seconds: the same binary and inputs give the same counts whatever
# else the machine is doing, so two commits compare fairly on a shared, noisy box (unlike req/s).
# Needs valgrind and h2load (nghttp2-client); uses the release binary (`cargo build --release`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQUESTS=${1:-20000}
BIN=${CROSSFADE_BIN:-$ROOT/target/release/crossfade}
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release --bin crossfade" >&2; exit 1; }
command -v valgrind >/dev/null && command -v h2load >/dev/null ||
  { echo "needs valgrind and h2load (apt-get install valgrind nghttp2-client)" >&2; exit 1; }

dir=$(mktemp -d /tmp/crossfade-profile.XXXXXX)
# shellcheck source=bench/local.sh
. "$ROOT/bench/local.sh"
local_setup "${PROFILE_YAML:-}" "${PROFILE_ROUTE_YAML:-}"
if [ -n "${FLOOR_BIN:-}" ]; then
  # The same 90/10 split (green's 1,000 basis points) over the same backends.
  proxy_cmd=("$FLOOR_BIN" "127.0.0.1:$listen" "127.0.0.1:$blue" "127.0.0.1:$green" 1000)
else
  proxy_cmd=("$BIN" proxy "$dir/proxy.yaml" --workers 1)
fi
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
  "${proxy_cmd[@]}" >"$dir/proxy.log" 2>&1 & proxy=$!
pids+=($proxy)
wait_proxy 300
# Warm up (connections, pools), then reset the counters so that only the measured requests count.
h2load --h1 -n 2000 -c 16 "http://127.0.0.1:$listen/" >/dev/null
callgrind_control -z "$proxy" >/dev/null
h2load --h1 -n "$REQUESTS" -c 16 "http://127.0.0.1:$listen/" | grep -E "requests:|status codes:" >&2
callgrind_control -d "$proxy" >/dev/null
kill "$proxy"; wait "$proxy" 2>/dev/null || true

# The dump after the reset holds exactly the measured requests.
out=$(ls -t "$dir"/callgrind.out* | grep -v '\.out$' | head -1 || true)
[ -n "$out" ] || out=$dir/callgrind.out
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "profile: $out"
echo "instructions per request: $((total / REQUESTS)) ($total Ir / $REQUESTS requests)"
echo
echo "== inclusive (top 40)"
# `|| true`: `head` closing the pipe early is no failure (under `pipefail` it ended the script here).
callgrind_annotate --threshold=100 --inclusive=yes --auto=no "$out" 2>/dev/null |
  sed -n '/file:function/,$p' | head -42 || true
echo
echo "== exclusive (top 40)"
callgrind_annotate --threshold=100 --inclusive=no --auto=no "$out" 2>/dev/null |
  sed -n '/file:function/,$p' | grep -v "(below main)\|__libc_start\|__rust_begin_short_backtrace\|:main \[\|ld-linux" | head -42 || true
