#!/usr/bin/env bash
# bench/latency.sh — per-request latency below saturation, several interleaved rounds, beside the peers.
#
# usage: bench/latency.sh [rounds] [seconds]          (defaults: 3 rounds of 8 s per target)
#        CROSSFADE_BIN=target/release/crossfade (default)
#        B_BIN=/tmp/other-crossfade B_ENV="VAR=1" bench/latency.sh   (a second crossfade, another
#        binary or the same one with other environment, as target "b")
#        RATE=20000 RATE_CONNS=16 (total req/s over that many HTTP/1.1 keep-alive connections)
#        RT=0 (run without real-time priority; see below)
# Needs nginx, haproxy, h2load, socat (bench/peer/setup.sh installs them) and root for RT.
#
# The same setup as bench/run.sh's fixed-rate pass (bench/peer: the backend nginx, nginx and
# HAProxy with one worker or thread, crossfade --workers 1 via bench/ours.sh, the 90/10 split,
# `h2load --h1 -t1 -c$RATE_CONNS --rps=RATE/RATE_CONNS` with a per-request log), but the pass is
# repeated, the targets interleaved in each round, and the report gives each round's p50, p90, p99
# and p99.9, their medians, and each proxy's added p99 (its median p99 less the backend's own,
# `direct`, reached with no proxy) with its ratio to nginx's and HAProxy's: issue 3's "p99 added
# latency no worse than either". It also pairs the rounds: crossfade's p99 less each peer's in
# the same round, the median difference and its distribution-free 95 % interval, so that enough
# rounds (20 or more) say whether a difference is there at all. run.sh takes one
# pass per target, and one pass's p99 moves by a quarter from run to run on a shared machine.
#
# h2load's clients fire together: requests come in bursts of RATE_CONNS. The report also gives, for
# the k-th request of a burst to complete, the median time from the burst's first request to its
# completion: how a proxy's cost per request adds up within a burst, apart from rare stalls.
#
# Real-time priority: with RT=1 (the default, when root) the whole harness runs under
# `chrt -f 50`, so the load generator, the backend and the proxy under test preempt everything
# else on the machine (other builds and tests): the figures then measure the proxies more than the
# neighbours. Linux keeps 5 % of each second for other processes (kernel.sched_rt_runtime_us), so
# nothing hangs, but other work nearly stops while this runs (about 30 s per target and round).
set -euo pipefail
ROUNDS=${1:-3}; SECS=${2:-8}
BENCH=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$BENCH")
if [ "${RT:-1}" = 1 ] && [ -z "${LATENCY_RT:-}" ] && [ "$(id -u)" = 0 ]; then
  export LATENCY_RT=1
  exec chrt -f 50 "$0" "$@"
fi
source "$BENCH/peer/lib.sh"
RATE=${RATE:-20000}; RATE_CONNS=${RATE_CONNS:-16}
export OURS_PORT=${OURS_PORT:-18099} OURS_ADMIN_PORT=${OURS_ADMIN_PORT:-19901} OURS_ROUTE=bench
export OURS_H2C_PORT=$OURS_PORT MODES=ka
export CROSSFADE_BIN=${CROSSFADE_BIN:-$ROOT/target/release/crossfade}
[ -x "$CROSSFADE_BIN" ] || die "no crossfade binary at $CROSSFADE_BIN: cargo build --release, or set CROSSFADE_BIN"
export OURS_CMD; OURS_CMD="bash $(printf '%q' "$BENCH/ours.sh")"
B_PORT=18097 B_ADMIN_PORT=19902
# pin_backend CPU: moves every thread of the backend nginx to CPU.
pin_backend() { local p; for p in $(tree_pids "$(pid_of backend)"); do taskset -a -p -c "$1" "$p" > /dev/null; done; }
pb_init
start_backends; start_nginx_proxy; start_haproxy; start_ours
targets=("direct $BLUE_PORT" "nginx $NGINX_PORT" "haproxy $HAPROXY_PORT" "crossfade $OURS_PORT")
if [ -n "${B_BIN:-}${B_ENV:-}" ]; then
  b_bin=${B_BIN:-$CROSSFADE_BIN}
  [ -x "$b_bin" ] || die "no binary at B_BIN=$b_bin"
  port_free "$B_PORT" || die "port $B_PORT in use"
  mkdir -p "$PB_TMP/b"
  # shellcheck disable=SC2086 # B_ENV is a list of VAR=value words
  start b "$PROXY_CPU" env ${B_ENV:-} PB_TMP="$PB_TMP/b" OURS_PORT=$B_PORT OURS_ADMIN_PORT=$B_ADMIN_PORT \
    CROSSFADE_BIN="$b_bin" bash "$BENCH/ours.sh"
  wait_http "$B_PORT" 30 || die "b did not answer on :$B_PORT (see $PB_TMP/b.log)"
  targets+=("b $B_PORT")
fi
log "fixed rate: $RATE req/s over $RATE_CONNS connections, $ROUNDS rounds of ${SECS}s per target$([ -n "${LATENCY_RT:-}" ] && echo ', real-time priority')"
for ((r = 1; r <= ROUNDS; r++)); do
  n=${#targets[@]}
  for ((i = 0; i < n; i++)); do
    read -r name port <<< "${targets[$(((i + r - 1) % n))]}"   # each round starts one further on
    rm -f "$PB_TMP/latency-$name-$r.log"
    # direct: the backend gets the proxy's core for the pass (as in bench/run.sh), not the load
    # generator's, so that its figure is what a proxy's hop adds to.
    [ "$name" = direct ] && pin_backend "$PROXY_CPU"
    taskset -c "$LOADGEN_CPU" h2load --h1 -t1 -c"$RATE_CONNS" --rps=$((RATE / RATE_CONNS)) -D "$SECS" \
      --warm-up-time=1 --log-file="$PB_TMP/latency-$name-$r.log" "http://127.0.0.1:$port/" \
      > "$PB_TMP/latency-$name-$r.txt" 2>&1 || log "h2load failed against $name (see $PB_TMP/latency-$name-$r.txt)"
    [ "$name" = direct ] && pin_backend "$BACKEND_CPU"
    log "  round $r: $name done"
  done
done
{
  echo "date: $(date -u +%FT%TZ); $(uname -srm); load average before the report: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "crossfade: $CROSSFADE_BIN$([ -n "${B_BIN:-}${B_ENV:-}" ] && echo "; b: ${B_BIN:-$CROSSFADE_BIN} ${B_ENV:-}")"
  python3 "$BENCH/latency_report.py" "$PB_TMP" "$RATE_CONNS"
} | tee "$PB_TMP/latency.md"
