#!/usr/bin/env bash
# bench/profile.sh — where `crossfade proxy` spends its instructions per request, by callgrind.
#
# usage: bench/profile.sh [requests]          (default 20000; a few minutes under valgrind)
#        PROFILE_ROUTE_YAML='shadow: { percent: 100 }' bench/profile.sh   (extra keys on the route)
#        PROFILE_YAML='access_log: /tmp/access.log' bench/profile.sh      (extra top-level keys)
#        FLOOR_BIN=target/release/examples/floor bench/profile.sh   (the floor instead of crossfade:
#        proxy/examples/floor.rs, `cargo build --release -p crossfade-proxy --example floor`)
#        PROFILE_PEER=nginx bench/profile.sh   (nginx, or haproxy, in the same place: one worker or
#        thread, the same 90/10 split with upstream keep-alive, as the peer harness runs them)
#        PROFILE_CONNS=64 bench/profile.sh     (client connections; default 16, the harness's wrk uses 64)
#        CACHE_SIM=1 bench/profile.sh          (also simulate the caches: I1/D1/LL misses per request)
#        PROFILE_CLOSE=20 bench/profile.sh     (a new connection per request, as the harness's close
#        mode: wrk -H 'Connection: close' for 20 s instead of h2load's keep-alive requests; needs wrk)
#        PROFILE_H2C=10 bench/profile.sh       (h2c, as the harness's h2c mode: h2load with prior
#        knowledge, 10 concurrent streams per connection, instead of HTTP/1.1; the peers listen h2c)
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
CONNS=${PROFILE_CONNS:-16}
if [ -n "${PROFILE_PEER:-}" ]; then
  peer_cmd "$PROFILE_PEER" "${PROFILE_H2C:-}" || exit 1
  proxy_cmd=("${peer[@]}")
elif [ -n "${FLOOR_BIN:-}" ]; then
  # The same 90/10 split (green's 1,000 basis points) over the same backends.
  proxy_cmd=("$FLOOR_BIN" "127.0.0.1:$listen" "127.0.0.1:$blue" "127.0.0.1:$green" 1000)
else
  proxy_cmd=("$BIN" proxy "$dir/proxy.yaml" --workers 1)
fi
sim=(); [ -n "${CACHE_SIM:-}" ] && sim=(--cache-sim=yes)
# PROXY_GLIBC_TUNABLES: glibc's GLIBC_TUNABLES for the proxy (and valgrind's loader) alone, not the
# backends, e.g. glibc.malloc.tcache_count=64 (docs/bench-2026-12-03b-alloc.md).
tunables=(); [ -n "${PROXY_GLIBC_TUNABLES:-}" ] && tunables=(env "GLIBC_TUNABLES=$PROXY_GLIBC_TUNABLES")
RUST_LOG=warn "${tunables[@]}" valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$dir/callgrind.out" \
  "${proxy_cmd[@]}" >"$dir/proxy.log" 2>&1 & proxy=$!
pids+=($proxy)
# h2c (PROFILE_H2C streams per connection, HTTP/2 with prior knowledge) or HTTP/1.1 keep-alive.
if [ -n "${PROFILE_H2C:-}" ]; then
  [ -z "${PROFILE_CLOSE:-}" ] || { echo "PROFILE_H2C and PROFILE_CLOSE exclude each other" >&2; exit 1; }
  protocol=(-m "$PROFILE_H2C")
  wait_proxy_h2c 300
else
  protocol=(--h1)
  wait_proxy 300
fi
# Warm up (connections, pools), then reset the counters so that only the measured requests count.
h2load "${protocol[@]}" -n 2000 -c "$CONNS" "http://127.0.0.1:$listen/" >/dev/null
callgrind_control -z "$proxy" >/dev/null
if [ -n "${PROFILE_CLOSE:-}" ]; then
  # A new connection per request (the harness's close mode): wrk for PROFILE_CLOSE seconds, and the
  # requests it completed are the divisor (the few in flight at the end make the figure a little
  # high). A long timeout: under valgrind the proxy is ~50 times slower.
  wrk -t1 -c"$CONNS" -d"${PROFILE_CLOSE}s" --timeout 60s -H 'Connection: close' \
    "http://127.0.0.1:$listen/" >"$dir/wrk.txt"
  callgrind_control -d "$proxy" >/dev/null
  REQUESTS=$(awk '/requests in/ { print $1; exit }' "$dir/wrk.txt")
  grep -E "requests in|Socket errors|Non-2xx" "$dir/wrk.txt" >&2 || true
  [ "${REQUESTS:-0}" -gt 0 ] || { echo "wrk completed no request; see $dir/wrk.txt" >&2; exit 1; }
else
  h2load "${protocol[@]}" -n "$REQUESTS" -c "$CONNS" "http://127.0.0.1:$listen/" | grep -E "requests:|status codes:" >&2
  callgrind_control -d "$proxy" >/dev/null
fi
kill "$proxy"; wait "$proxy" 2>/dev/null || true

# The dump after the reset holds exactly the measured requests.
out=$(ls -t "$dir"/callgrind.out* | grep -v '\.out$' | head -1 || true)
[ -n "$out" ] || out=$dir/callgrind.out
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "profile: $out"
echo "instructions per request: $((total / REQUESTS)) ($total Ir / $REQUESTS requests, $CONNS connections)"
if [ -n "${CACHE_SIM:-}" ]; then
  # The simulated caches (valgrind's model of this host's: I1 and D1 32 KiB 8-way here): misses
  # per request, instruction fetches (I1mr) apart from data reads and writes (D1mr, D1mw).
  callgrind_annotate "$out" 2>/dev/null | awk -v n="$REQUESTS" '
    /^Events recorded:/ { for (i = 3; i <= NF; i++) name[i - 2] = $i }
    /PROGRAM TOTALS/ { line = "misses per request:"
      for (i = 1; i <= NF; i++) { v = $i; gsub(",", "", v)
        if (v ~ /^[0-9]+$/) { k++; if (name[k] ~ /mr$|mw$/) line = line sprintf(" %s %.0f", name[k], v / n) } }
      print line; exit }'
fi
echo
echo "== inclusive (top 40)"
# `|| true`: `head` closing the pipe early is no failure (under `pipefail` it ended the script here).
callgrind_annotate --threshold=100 --inclusive=yes --auto=no "$out" 2>/dev/null |
  sed -n '/file:function/,$p' | head -42 || true
echo
echo "== exclusive (top 40)"
# Frames on the stack for the whole dump show the whole total even here (valgrind 3.19 with
# rustc 1.95's debug info): the rows at 100.0% are left out, as bench/callgrind_groups.py does.
callgrind_annotate --threshold=100 --inclusive=no --auto=no "$out" 2>/dev/null |
  sed -n '/file:function/,$p' | grep -v "(100.0%)\|(below main)\|__libc_start\|__rust_begin_short_backtrace\|:main \[\|ld-linux" | head -42 || true
