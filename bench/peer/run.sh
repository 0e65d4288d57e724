#!/usr/bin/env bash
# peerbench/run.sh — side-by-side throughput/latency of L7 weighted-split proxies.
#
# usage: ./run.sh [duration_s]          (default 10 s per measured run)
#
# Targets (all on 127.0.0.1):
#   direct   wrk -> backend blue :18081              (ceiling: no proxy)
#   nginx    wrk -> nginx :18090  -> 90/10 blue/green (1 worker, upstream keepalive 64)
#   haproxy  wrk -> haproxy :18091 -> 90/10           (nbthread 1, http-reuse always)
#   ours     wrk -> $OURS_PORT -> 90/10               (only if OURS_CMD is set; see lib.sh)
#
# Env knobs: REPS=3 (interleaved rounds), CONNS=64, WARMUP=2 (s per target),
#            H2LOAD=1 (one h2load --h1 pass at a fixed RATE=20000 req/s total over
#            RATE_CONNS=16 connections: latency below saturation), SWITCH=1 (run switch.sh
#            checks afterwards), SWITCH_DURATION=12, plus OURS_CMD/OURS_PORT/
#            OURS_SWITCH_CMD and the ports/CPUs in lib.sh.
# Output: markdown report on stdout; raw data + logs in $PB_TMP (printed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$PB_DIR/switch.sh"            # defines switch_all (not executed when sourced)

DURATION=${1:-10}
REPS=${REPS:-3}
WARMUP=${WARMUP:-2}
H2LOAD=${H2LOAD:-1}
RATE=${RATE:-20000}          # total req/s for the fixed-rate h2load pass
RATE_CONNS=${RATE_CONNS:-16}  # its clients (fewer clients = smaller synchronized bursts)
SWITCH=${SWITCH:-1}
SWITCH_DURATION=${SWITCH_DURATION:-12}

pb_init
RES=$PB_TMP/results.jsonl; : > "$RES"

# ---- environment record -----------------------------------------------------
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -srm); $(. /etc/os-release; echo "$PRETTY_NAME"); cpus: $NCPU x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nginx: $(nginx -v 2>&1 | sed 's/.*version: //')"
  echo "haproxy: $(haproxy -v 2>&1 | head -1)"
  echo "wrk: $(wrk -v 2>&1 | head -1)"
  echo "h2load: $(h2load --version 2>&1 | head -1)"
  echo "ours: ${OURS_DESC:-${OURS_CMD:-<unset, skipped>}}"
  echo "layout: loadgen=cpu$LOADGEN_CPU proxy=cpu$PROXY_CPU backend=cpu$BACKEND_CPU; wrk conns=$CONNS duration=${DURATION}s reps=$REPS; h2load rate=$RATE req/s over $RATE_CONNS conns"
} > "$PB_TMP/env.txt"

# ---- start everything ---------------------------------------------------------
start_backends
start_nginx_proxy
start_haproxy
start_ours

# target table: name port pid-name (whose CPU/RSS we report)
TARGETS=("direct $BLUE_PORT backend" "nginx $NGINX_PORT nginx" "haproxy $HAPROXY_PORT haproxy")
[ -n "$OURS_CMD" ] && TARGETS+=("ours $OURS_PORT ours")

# ---- correctness: the split really is 90/10 ----------------------------------
: > "$PB_TMP/split.txt"
for t in "${TARGETS[@]}"; do
  read -r name port _ <<< "$t"
  [ "$name" = direct ] && continue
  echo "$name $(split_check "$port" 1000)" >> "$PB_TMP/split.txt"   # name blue green other
done
log "split check (1000 sequential GETs): $(tr '\n' ';' < "$PB_TMP/split.txt")"

# ---- helpers ------------------------------------------------------------------
# With 2 cores the backend shares the load generator's core. For "direct" we move
# it onto the proxy core for the run, so "direct" = one full core of backend.
pin_session() { local p; for p in $(tree_pids "$1"); do taskset -a -p -c "$2" "$p" >/dev/null; done; }

# bench_one NAME PORT PIDNAME REP — one wrk run; appends one JSON line to $RES with
# the wrk summary plus raw CPU counters (report.py turns them into percentages):
#   server_ticks/backend_ticks: utime+stime of the target's / backend's processes
#   wrk_cpu_s: wrk's own user+sys seconds
#   cpuN/all: [busy, total] tick deltas from /proc/stat (all = whole machine)
bench_one() {
  local name=$1 port=$2 pname=$3 rep=$4
  local spid bpid repin=0
  spid=$(pid_of "$pname"); bpid=$(pid_of backend)
  if [ "$name" = direct ] && [ "$BACKEND_CPU" = "$LOADGEN_CPU" ] && [ "$NCPU" -ge 2 ]; then
    pin_session "$bpid" "$PROXY_CPU"; repin=1
  fi
  local s0 b0 l0 p0 a0 s1 b1 l1 p1 a1 wcpu TIMEFORMAT='%U %S'
  s0=$(cpu_ticks "$spid"); b0=$(cpu_ticks "$bpid")
  l0=$(cpu_busy "$LOADGEN_CPU"); p0=$(cpu_busy "$PROXY_CPU"); a0=$(cpu_busy "")
  { time taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency \
      -s "$PB_DIR/report.lua" "http://127.0.0.1:$port/" > "$PB_TMP/wrk-$name-$rep.txt" 2>&1; } 2> "$PB_TMP/wrk-$name-$rep.time"
  s1=$(cpu_ticks "$spid"); b1=$(cpu_ticks "$bpid")
  l1=$(cpu_busy "$LOADGEN_CPU"); p1=$(cpu_busy "$PROXY_CPU"); a1=$(cpu_busy "")
  if [ $repin = 1 ]; then pin_session "$bpid" "$BACKEND_CPU"; fi
  wcpu=$(awk '{print $1 + $2}' "$PB_TMP/wrk-$name-$rep.time")
  local mem; mem=$(mem_kb "$spid")
  local wj; wj=$(sed -n 's/^PBJSON //p' "$PB_TMP/wrk-$name-$rep.txt")
  [ -n "$wj" ] || die "wrk produced no result for $name (see $PB_TMP/wrk-$name-$rep.txt)"
  delta() { echo "$1 $2" | awk '{printf "[%d, %d]", $3-$1, $4-$2}'; }
  printf '{"target":"%s","rep":%d,"conns":%d,"clk_tck":%d,"server_ticks":%d,"backend_ticks":%d,"same_server_backend":%s,"wrk_cpu_s":%s,"cpu_loadgen":%s,"cpu_proxy":%s,"cpu_all":%s,"rss_kb":%d,"pss_kb":%d,"wrk":%s}\n' \
    "$name" "$rep" "$CONNS" "$CLK_TCK" $((s1 - s0)) $((b1 - b0)) "$([ "$spid" = "$bpid" ] && echo true || echo false)" \
    "$wcpu" "$(delta "$l0" "$l1")" "$(delta "$p0" "$p1")" "$(delta "$a0" "$a1")" \
    ${mem% *} ${mem#* } "$wj" >> "$RES"
  log "  $name rep $rep: $(grep -E '^Requests/sec' "$PB_TMP/wrk-$name-$rep.txt" | tr -s ' ')"
}

# ---- warm-up (fills keep-alive pools, faults in memory) -------------------------
for t in "${TARGETS[@]}"; do
  read -r name port _ <<< "$t"
  taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$port/" > /dev/null 2>&1
done

# ---- measured runs: interleaved rounds (A B C A B C ...) -----------------------
for ((rep = 1; rep <= REPS; rep++)); do
  log "round $rep/$REPS"
  for t in "${TARGETS[@]}"; do
    read -r name port pname <<< "$t"
    bench_one "$name" "$port" "$pname" "$rep"
  done
done

# ---- h2load at a FIXED request rate: latency that is not just queueing ----------
# wrk is closed-loop at saturation, so its p99 mostly measures queueing. Here each
# of RATE_CONNS HTTP/1.1 clients sends RATE/RATE_CONNS req/s (~1/4 of a proxy's
# capacity) and report.py computes percentiles from h2load's per-request log.
# h2load's per-client timers start together, so requests arrive in small bursts
# (up to RATE_CONNS at once): this is latency under bursty, not Poisson, arrivals.
if [ "$H2LOAD" = 1 ]; then
  log "h2load --h1 at a fixed ${RATE} req/s over $RATE_CONNS connections"
  for t in "${TARGETS[@]}"; do
    read -r name port pname <<< "$t"
    if [ "$name" = direct ] && [ "$BACKEND_CPU" = "$LOADGEN_CPU" ] && [ "$NCPU" -ge 2 ]; then
      pin_session "$(pid_of backend)" "$PROXY_CPU"
    fi
    taskset -c "$LOADGEN_CPU" h2load --h1 -t1 -c"$RATE_CONNS" --rps=$((RATE / RATE_CONNS)) -D "$DURATION" \
      --warm-up-time=1 --log-file="$PB_TMP/h2load-$name.log" \
      "http://127.0.0.1:$port/" > "$PB_TMP/h2load-$name.txt" 2>&1 || true
    if [ "$name" = direct ]; then pin_session "$(pid_of backend)" "$BACKEND_CPU"; fi
  done
fi

# ---- switch check (weights 90/10 -> 0/100 under load) --------------------------
if [ "$SWITCH" = 1 ]; then
  switch_all "$SWITCH_DURATION"
fi

echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$PB_TMP/env.txt"
python3 "$PB_DIR/report.py" "$PB_TMP" | tee "$PB_TMP/report.md"
