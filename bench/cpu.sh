#!/usr/bin/env bash
# bench/cpu.sh — a proxy's CPU time per request, split into user space and kernel, beside the peers.
#
# usage: bench/cpu.sh [ka|close|h2c] [seconds] [rounds]     (defaults: ka, 8, 2)
#        WHO="crossfade nginx haproxy floor" bench/cpu.sh   (which proxies, in each round's order)
#        CROSSFADE_BIN=target/release/crossfade FLOOR_BIN=target/release/examples/floor (defaults)
#        WHO="nginx haproxy floor rawfloor" RAWFLOOR_BIN=target/release/examples/rawfloor (default):
#        the raw floor, a proxy of no HTTP library (proxy/examples/rawfloor.rs), HTTP/1.1 only
#        WHO="nginx floor pingora-proxy pingora-sessions" PINGORA_DIR=bench/pingora/target/release (default):
#        Cloudflare's pingora doing the same split, as pingora-proxy and as bare HTTP/1.1 sessions
#        (bench/pingora, built apart: cargo build --release --manifest-path bench/pingora/Cargo.toml)
#        B_BIN=/tmp/other-crossfade WHO="crossfade b nginx" bench/cpu.sh   (two builds compared: "b" is
#        a second crossfade binary, run with the same config)
# Needs wrk, h2load, nginx and haproxy (bench/peer/setup.sh installs them).
#
# Each proxy in turn (one worker or thread, the same 90/10 split over the same two `crossfade
# sample-app` backends, bench/local.sh) is warmed up with 2,000 requests and loaded for the given
# seconds by `wrk -t1 -c64` (close: with `Connection: close`; h2c: `h2load -c16 -m10`, as the peer
# harness loads it). The user and system CPU the proxy's process spent in that time
# (`/proc/PID/task/*/stat`, fields utime and stime, in clock ticks; its child processes counted
# too) is divided by the requests completed: microseconds per request, and what they make per
# core (1 / total). Rounds interleave the proxies, so a machine that slows down slows all alike.
#
# Why: throughput per core is the inverse of the CPU time per request, and on loopback most of it
# is the kernel's (TCP in and out, on both sides of the proxy), which no proxy can cut below its
# system calls. Instruction counts (bench/profile.sh) see only user space; this shows how much of
# a per-core ratio user-space work can still move. CPU time is less sensitive to a busy machine
# than requests per second, but not immune: compare proxies within one run.
set -euo pipefail
MODE=${1:-ka}; SECS=${2:-8}; ROUNDS=${3:-2}
case $MODE in close|ka|h2c) ;; *) echo "mode '$MODE': expected ka, close or h2c" >&2; exit 2 ;; esac
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CROSSFADE_BIN:-$ROOT/target/release/crossfade}   # also runs the backends
FLOOR_BIN=${FLOOR_BIN:-$ROOT/target/release/examples/floor}
RAWFLOOR_BIN=${RAWFLOOR_BIN:-$ROOT/target/release/examples/rawfloor}
PINGORA_DIR=${PINGORA_DIR:-$ROOT/bench/pingora/target/release}
WHO=${WHO:-crossfade nginx haproxy floor}
[ -x "$BIN" ] || { echo "no crossfade binary at $BIN: cargo build --release, or set CROSSFADE_BIN" >&2; exit 1; }
for who in $WHO; do
  case $who in
    crossfade) ;;
    b) [ -x "${B_BIN:-}" ] || { echo "WHO names b: set B_BIN to a second crossfade binary" >&2; exit 1; } ;;
    floor) [ -x "$FLOOR_BIN" ] || { echo "no floor at $FLOOR_BIN: cargo build --release -p crossfade-proxy --example floor" >&2; exit 1; } ;;
    rawfloor) [ -x "$RAWFLOOR_BIN" ] || { echo "no raw floor at $RAWFLOOR_BIN: cargo build --release -p crossfade-proxy --example rawfloor" >&2; exit 1; } ;;
    pingora-proxy|pingora-sessions) [ -x "$PINGORA_DIR/$who" ] || { echo "no $who in $PINGORA_DIR: cargo build --release --manifest-path bench/pingora/Cargo.toml (needs cmake), or set PINGORA_DIR" >&2; exit 1; } ;;
    nginx|haproxy) command -v "$who" >/dev/null || { echo "no $who: bench/peer/setup.sh" >&2; exit 1; } ;;
    *) echo "WHO: '$who' is not one of crossfade, b, nginx, haproxy, floor, rawfloor, pingora-proxy, pingora-sessions" >&2; exit 2 ;;
  esac
done
[ "$MODE" = h2c ] && [[ " $WHO " =~ \ (floor|rawfloor|pingora-proxy|pingora-sessions)\  ]] && { echo "the floors and the pingora slots speak no h2c here: leave them out of WHO" >&2; exit 2; }
dir=$(mktemp -d /tmp/crossfade-cpu.XXXXXX)
# shellcheck source=bench/local.sh
. "$ROOT/bench/local.sh"
local_setup "" ""
wait_backends
h2=; [ "$MODE" = h2c ] && h2=1
hz=$(getconf CLK_TCK)

# "utime stime" in clock ticks, summed over the process's threads and its children's.
cpu_ticks() {
  local u=0 s=0 pid t f
  for pid in "$1" $(pgrep -P "$1" || true); do
    for t in /proc/"$pid"/task/*/stat; do
      # The command name (field 2) may hold spaces: split after its closing parenthesis.
      read -r -a f <<<"$(sed 's/.*) //' "$t" 2>/dev/null)" || continue
      [ "${#f[@]}" -gt 12 ] || continue
      u=$((u + f[11])); s=$((s + f[12]))
    done
  done
  echo "$u $s"
}

one() {
  local who=$1 proxy requests u0 s0 u1 s1
  case $who in
    crossfade) RUST_LOG=warn "$BIN" proxy "$dir/proxy.yaml" --workers 1 >"$dir/proxy.log" 2>&1 & proxy=$! ;;
    b) RUST_LOG=warn "$B_BIN" proxy "$dir/proxy.yaml" --workers 1 >"$dir/b.log" 2>&1 & proxy=$! ;;
    floor) "$FLOOR_BIN" "127.0.0.1:$listen" "127.0.0.1:$blue" "127.0.0.1:$green" 1000 >"$dir/floor.log" 2>&1 & proxy=$! ;;
    rawfloor) "$RAWFLOOR_BIN" "127.0.0.1:$listen" "127.0.0.1:$blue" "127.0.0.1:$green" 1000 >"$dir/rawfloor.log" 2>&1 & proxy=$! ;;
    pingora-proxy|pingora-sessions) "$PINGORA_DIR/$who" "127.0.0.1:$listen" "127.0.0.1:$blue" "127.0.0.1:$green" 1000 >"$dir/$who.log" 2>&1 & proxy=$! ;;
    *) peer_cmd "$who" "$h2"; "${peer[@]}" >"$dir/$who.log" 2>&1 & proxy=$! ;;
  esac
  if [ -n "$h2" ]; then wait_proxy_h2c 100; else wait_proxy 100; fi
  if [ -n "$h2" ]; then
    h2load -c16 -m10 -n 2000 "http://127.0.0.1:$listen/" >/dev/null
  else
    h2load --h1 -c16 -n 2000 "http://127.0.0.1:$listen/" >/dev/null
  fi
  read -r u0 s0 < <(cpu_ticks "$proxy")
  if [ -n "$h2" ]; then
    h2load -c16 -m10 -D "$SECS" "http://127.0.0.1:$listen/" >"$dir/load.txt"
    requests=$(awk '/^requests:/ { print $8; exit }' "$dir/load.txt")
  else
    local header=(); [ "$MODE" = close ] && header=(-H 'Connection: close')
    wrk -t1 -c64 -d"${SECS}s" "${header[@]}" "http://127.0.0.1:$listen/" >"$dir/load.txt"
    requests=$(awk '/requests in/ { print $1; exit }' "$dir/load.txt")
  fi
  read -r u1 s1 < <(cpu_ticks "$proxy")
  kill "$proxy" 2>/dev/null || true; wait "$proxy" 2>/dev/null || true
  [ "${requests:-0}" -gt 0 ] || { echo "$who: no request completed; see $dir" >&2; exit 1; }
  awk -v who="$who" -v n="$requests" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$hz" 'BEGIN {
    us = u / hz * 1e6 / n; ss = s / hz * 1e6 / n
    printf "%s %d %.3f %.3f\n", who, n, us, ss }' >>"$dir/rows"
  printf '  %-10s %9d requests  user %6.2f us  system %6.2f us\n' "$who" "$requests" \
    "$(tail -1 "$dir/rows" | cut -d' ' -f3)" "$(tail -1 "$dir/rows" | cut -d' ' -f4)"
}

echo "mode $MODE, ${SECS} s per proxy, $ROUNDS rounds; CPU time per request (clock tick $((1000000 / hz)) us):"
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for who in $WHO; do one "$who"; done
done
echo
echo "median over rounds     user us  system us  total us  req/s per core  per core x nginx"
awk '
  { user[$1] = user[$1] " " $3; sys[$1] = sys[$1] " " $4; tot[$1] = tot[$1] " " ($3 + $4)
    if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
  function median(list,   a, n, i, j, t) {
    n = split(list, a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  END {
    base = ("nginx" in seen) ? median(tot["nginx"]) : 0
    for (i = 1; i <= k; i++) { w = order[i]; t = median(tot[w])
      printf "  %-18s %9.2f %10.2f %9.2f %15.0f %17s\n", w, median(user[w]), median(sys[w]), t, 1e6 / t,
        base ? sprintf("%.2f", base / t) : "-" } }' "$dir/rows"
echo "(rows in $dir/rows: proxy, requests, user us, system us per request)"
