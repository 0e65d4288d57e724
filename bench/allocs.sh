#!/usr/bin/env bash
# bench/allocs.sh — allocations per request of `crossfade proxy`, by size, in one client mode.
#
# usage: bench/allocs.sh [close|ka] [seconds]
#        (CROSSFADE_BIN, a glibc-malloc build, default one built by bench/system_alloc.sh)
#
# Builds bench/alloc_shim.c (gcc) and runs `crossfade proxy --workers 1` with it LD_PRELOADed, on
# the setup of bench/profile.sh (bench/local.sh: two `crossfade sample-app` backends, 90/10), under
# `wrk -t1 -c16` for the given seconds (default 4; `Connection: close` in the close mode). The
# counts cover the proxy's whole life (start-up is a few hundred calls, noise against the tens of
# thousands of requests); divided by wrk's requests. docs/bench-2026-12-02f-close.md uses it: with a
# new connection per request, realloc copied 6.5 KB per request before and 223 B after.
set -euo pipefail
MODE=${1:-close}; SECS=${2:-4}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# A glibc-malloc build (bench/system_alloc.sh: CROSSFADE_BIN, or built); it also runs the backends.
# shellcheck source=bench/system_alloc.sh
. "$ROOT/bench/system_alloc.sh"
dir=$(mktemp -d /tmp/crossfade-allocs.XXXXXX)
gcc -O2 -shared -fPIC -o "$dir/shim.so" "$ROOT/bench/alloc_shim.c" -ldl
. "$ROOT/bench/local.sh"
local_setup "" ""
SHIM_OUT=$dir/shim.txt LD_PRELOAD=$dir/shim.so RUST_LOG=warn \
  "$BIN" proxy "$dir/proxy.yaml" --workers 1 >"$dir/proxy.log" 2>&1 & proxy=$!
wait_proxy 100
header=(); [ "$MODE" = close ] && header=(-H 'Connection: close')
wrk -t1 -c16 -d"${SECS}s" "${header[@]}" "http://127.0.0.1:$listen/" >"$dir/wrk.txt"
kill -TERM "$proxy"; wait "$proxy" || true
requests=$(awk '/requests in/ { print $1; exit }' "$dir/wrk.txt")
[ -s "$dir/shim.txt" ] || { echo "the proxy wrote no counts; see $dir" >&2; exit 1; }
echo "crossfade $MODE: $requests requests; per request, by size (bytes):"
awk -v n="$requests" '
  $1 == "copied" { copied = $2; next }
  { m += $2; k += $3; v += $4
    if (($2 + $3 + $4) / n >= 0.01)
      printf "  %6d-%-6d malloc %5.2f  realloc in place %5.2f  realloc moved %5.2f\n", 2 ^ $1, 2 ^ ($1 + 1) - 1, $2 / n, $3 / n, $4 / n }
  END { printf "  total        malloc %5.2f  realloc in place %5.2f  realloc moved %5.2f\n  bytes copied by realloc: %.0f\n", m / n, k / n, v / n, copied / n }' "$dir/shim.txt"
