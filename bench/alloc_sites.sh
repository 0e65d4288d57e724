#!/usr/bin/env bash
# bench/alloc_sites.sh — where `crossfade proxy` allocates, per request, by call stack (heaptrack).
#
# usage: bench/alloc_sites.sh [close|ka|h2c] [seconds] [min-per-request] [frames]
#        (CROSSFADE_BIN, a glibc-malloc build, default one built by bench/system_alloc.sh;
#        defaults close, 3 s, 0.1, 6)
#
# The setup of bench/allocs.sh (bench/local.sh: two `crossfade sample-app` backends, 90/10,
# `crossfade proxy --workers 1`), with the proxy run under heaptrack, then `wrk -t1 -c16` for the
# given seconds (`Connection: close` in the close mode; h2c: `h2load -c16 -m10`, HTTP/2 with prior
# knowledge, as the harness's h2c mode). heaptrack records every allocation's
# stack; bench/alloc_sites.py groups them by their first frames outside the allocator and std's
# containers and prints the sites per request (start-up included, noise against the requests).
# allocs.sh gives the sizes, this the places; docs/bench-2026-12-03b-alloc.md uses both. Needs
# heaptrack (apt-get install heaptrack), wrk and c++filt (binutils); heaptrack slows the proxy
# about threefold, which changes no count per request.
set -euo pipefail
MODE=${1:-close}; SECS=${2:-3}; LEAST=${3:-0.1}; FRAMES=${4:-6}
case $MODE in close|ka|h2c) ;; *) echo "mode '$MODE': expected close, ka or h2c" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# A glibc-malloc build (bench/system_alloc.sh: CROSSFADE_BIN, or built); it also runs the backends.
# shellcheck source=bench/system_alloc.sh
. "$ROOT/bench/system_alloc.sh"
command -v heaptrack >/dev/null || { echo "needs heaptrack (apt-get install heaptrack)" >&2; exit 1; }
dir=$(mktemp -d /tmp/crossfade-alloc-sites.XXXXXX)
. "$ROOT/bench/local.sh"
local_setup "" ""
RUST_LOG=warn heaptrack -o "$dir/heaptrack" "$BIN" proxy "$dir/proxy.yaml" --workers 1 \
  >"$dir/proxy.log" 2>&1 & tracked=$!
wait_proxy 150
header=(); [ "$MODE" = close ] && header=(-H 'Connection: close')
if [ "$MODE" = h2c ]; then
  # A warm-up first (the streams' first requests under heaptrack are slow to start).
  h2load -n 500 -c16 -m10 "http://127.0.0.1:$listen/" >/dev/null
  h2load -c16 -m10 -D "$SECS" "http://127.0.0.1:$listen/" >"$dir/h2load.txt"
  requests=$(awk '/^requests:/ { print $8; exit }' "$dir/h2load.txt")
else
  wrk -t1 -c16 -d"${SECS}s" "${header[@]}" "http://127.0.0.1:$listen/" >"$dir/wrk.txt"
  requests=$(awk '/requests in/ { print $1; exit }' "$dir/wrk.txt")
fi
# heaptrack runs the proxy as its child: stop the proxy, and heaptrack writes its file.
kill -TERM "$(pgrep -P "$tracked" -f "^$BIN proxy")"; wait "$tracked" || true
heaptrack_print -f "$dir"/heaptrack.* -F "$dir/stacks.txt" --flamegraph-cost-type allocations >/dev/null
echo "crossfade $MODE: $requests requests (profile in $dir)"
python3 "$ROOT/bench/alloc_sites.py" "$dir/stacks.txt" "$requests" "$LEAST" "$FRAMES"
