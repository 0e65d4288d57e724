#!/usr/bin/env bash
# peerbench/run.sh — side-by-side throughput/latency of L7 weighted-split proxies.
#
# usage: ./run.sh [duration_s]          (default 10 s per measured run)
#
# Targets (all on 127.0.0.1; h1 port / h2c port):
#   direct   client -> backend blue :18081 / :18083       (ceiling: no proxy)
#   nginx    client -> nginx :18090 / :18092  -> 90/10 blue/green (1 worker, upstream keepalive)
#   haproxy  client -> haproxy :18091 / :18093 -> 90/10  (nbthread 1, http-reuse always)
#   ours     client -> $OURS_PORT / $OURS_H2C_PORT -> 90/10 (only if OURS_CMD is set; see lib.sh)
# Upstream (proxy -> backend) is HTTP/1.1 keep-alive for every proxy in every mode.
#
# Client modes (MODES="ka close h2c", any subset), each measured at saturation:
#   ka     wrk -t1 -c$CONNS                            HTTP/1.1 keep-alive
#   close  wrk -t1 -c$CONNS -H 'Connection: close'     HTTP/1.1, a new TCP connection per request
#   h2c    h2load -t1 -c$H2C_CONNS -m$H2C_STREAMS      HTTP/2 with prior knowledge, 1 s warm-up
# Rounds interleave every mode and target: round 1 = (ka: direct nginx haproxy ours) (close: ...)
# (h2c: ...), round 2 = (ka: nginx haproxy ours direct) ..., each round one target further on (so
# that none always runs last, after the others' TIME-WAIT sockets); report.py takes ratios within
# a round.
#
# Env knobs: MODES, REPS=3 (interleaved rounds), CONNS=64, H2C_CONNS=16, H2C_STREAMS=10,
#            WARMUP=2 (s per target), H2LOAD=1 (one h2load --h1 pass at a fixed RATE=20000 req/s
#            total over RATE_CONNS=16 connections: latency below saturation), SWITCH=1 (run
#            switch.sh checks afterwards), SWITCH_DURATION=12, SWAPS=1 (swaps.sh: case C15's
#            bursts of weight changes under a fixed load, HAProxy and ours, ~3 min), plus OURS_CMD/OURS_PORT/
#            OURS_H2C_PORT/OURS_SWITCH_CMD and the ports/CPUs in lib.sh.
#            OURS_IDLE_CMD (optional): run after everything else; it must write
#            $PB_TMP/idle.json (see bench/idle_rss.sh), which report.py adds to the summary.
# Output: markdown report on stdout; raw data + logs in $PB_TMP (printed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$PB_DIR/switch.sh"            # defines switch_all (not executed when sourced)
source "$PB_DIR/swaps.sh"             # defines swaps_all (case C15: bursts of weight changes)

DURATION=${1:-10}
REPS=${REPS:-3}
WARMUP=${WARMUP:-2}
H2LOAD=${H2LOAD:-1}
RATE=${RATE:-20000}          # total req/s for the fixed-rate h2load pass
RATE_CONNS=${RATE_CONNS:-16}  # its clients (fewer clients = smaller synchronized bursts)
SWITCH=${SWITCH:-1}
SWAPS=${SWAPS:-1}
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
  echo "layout: loadgen=cpu$LOADGEN_CPU proxy=cpu$PROXY_CPU backend=cpu$BACKEND_CPU; modes: $MODES; duration=${DURATION}s reps=$REPS; wrk conns=$CONNS; h2c: h2load conns=$H2C_CONNS streams=$H2C_STREAMS; fixed-rate h2load --h1 rate=$RATE req/s over $RATE_CONNS conns"
  echo "loopback TCP: net.ipv4.tcp_tw_reuse=$(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null || echo ?) ip_local_port_range=$(tr '\t' '-' < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo ?) tcp_max_tw_buckets=$(cat /proc/sys/net/ipv4/tcp_max_tw_buckets 2>/dev/null || echo ?); open files: soft $(ulimit -Sn) hard $(ulimit -Hn)"
} > "$PB_TMP/env.txt"

# ---- start everything ---------------------------------------------------------
start_backends
start_nginx_proxy
start_haproxy
start_ours

# target table: name port pid-name (whose CPU/RSS we report) h2c-port
TARGETS=("direct $BLUE_PORT backend $BLUE_H2C_PORT" "nginx $NGINX_PORT nginx $NGINX_H2C_PORT"
         "haproxy $HAPROXY_PORT haproxy $HAPROXY_H2C_PORT")
[ -n "$OURS_CMD" ] && TARGETS+=("ours $OURS_PORT ours $OURS_H2C_PORT")
for m in $MODES; do
  case $m in ka|close|h2c) ;; *) die "unknown mode '$m' in MODES (ka, close, h2c)" ;; esac
done

# ---- correctness: the split really is 90/10 ----------------------------------
# Over HTTP/1.1 keep-alive, and with the h2c mode also over one h2c connection ("<name>-h2c").
: > "$PB_TMP/split.txt"
for t in "${TARGETS[@]}"; do
  read -r name port _ h2port <<< "$t"
  [ "$name" = direct ] && continue
  echo "$name $(split_check "$port" 1000)" >> "$PB_TMP/split.txt"   # name blue green other
  if mode_on h2c; then
    echo "$name-h2c $(split_check "$h2port" 1000 h2c)" >> "$PB_TMP/split.txt"
  fi
done
log "split check (1000 GETs each): $(tr '\n' ';' < "$PB_TMP/split.txt")"

# ---- helpers ------------------------------------------------------------------
# With 2 cores the backend shares the load generator's core. For "direct" we move
# it onto the proxy core for the run, so "direct" = one full core of backend.
pin_session() { local p; for p in $(tree_pids "$1"); do taskset -a -p -c "$2" "$p" >/dev/null; done; }

# time_wait : TCP sockets in TIME-WAIT on the machine (new-connection-per-request leaves one per
# request on the closing side, for 60 s; see the close mode in bench/README.md).
time_wait() { ss -Htan state time-wait 2>/dev/null | wc -l; }

# bench_one MODE NAME PORT PIDNAME REP — one run of the mode's load generator at saturation;
# appends one JSON line to $RES with its summary ("wrk": report.lua's fields, or h2load_json.py's
# in the same shape) plus raw CPU counters (report.py turns them into percentages):
#   server_ticks/backend_ticks: utime+stime of the target's / backend's processes
#   wrk_cpu_s: the load generator's own user+sys seconds
#   cpu_window_s: wall seconds the CPU counters cover (h2load's includes its 1 s warm-up)
#   cpuN/all: [busy, total] tick deltas from /proc/stat (all = whole machine)
#   time_wait: TIME-WAIT sockets on the machine right after the run
#   backend_conns: connections the backend accepted during the run (for a proxy: upstream
#     connections it opened; for direct: the client's own)
bench_one() {
  local mode=$1 name=$2 port=$3 pname=$4 rep=$5
  local spid bpid repin=0 out=$PB_TMP/$mode-$name-$rep client conns=$CONNS
  local cmd
  case $mode in
    ka)    client="wrk -t1 -c$CONNS"
           cmd=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$PB_DIR/report.lua" "http://127.0.0.1:$port/") ;;
    close) client="wrk -t1 -c$CONNS -H 'Connection: close'"
           cmd=(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H 'Connection: close'
                -s "$PB_DIR/report.lua" "http://127.0.0.1:$port/") ;;
    h2c)   client="h2load -t1 -c$H2C_CONNS -m$H2C_STREAMS" conns=$H2C_CONNS
           rm -f "$out.log"       # h2load appends to its log file
           cmd=(h2load -t1 -c"$H2C_CONNS" -m"$H2C_STREAMS" -D "$DURATION" --warm-up-time=1
                --log-file="$out.log" "http://127.0.0.1:$port/") ;;
  esac
  spid=$(pid_of "$pname"); bpid=$(pid_of backend)
  if [ "$name" = direct ] && [ "$BACKEND_CPU" = "$LOADGEN_CPU" ] && [ "$NCPU" -ge 2 ]; then
    pin_session "$bpid" "$PROXY_CPU"; repin=1
  fi
  local s0 b0 l0 p0 a0 s1 b1 l1 p1 a1 t0 t1 wcpu TIMEFORMAT='%U %S'
  s0=$(cpu_ticks "$spid"); b0=$(cpu_ticks "$bpid")
  local c0 c1; c0=$(backend_accepts)
  l0=$(cpu_busy "$LOADGEN_CPU"); p0=$(cpu_busy "$PROXY_CPU"); a0=$(cpu_busy ""); t0=$(date +%s%N)
  { time taskset -c "$LOADGEN_CPU" "${cmd[@]}" > "$out.txt" 2>&1; } 2> "$out.time" || true
  t1=$(date +%s%N)
  s1=$(cpu_ticks "$spid"); b1=$(cpu_ticks "$bpid")
  l1=$(cpu_busy "$LOADGEN_CPU"); p1=$(cpu_busy "$PROXY_CPU"); a1=$(cpu_busy "")
  local tw; tw=$(time_wait)
  c1=$(backend_accepts)
  if [ $repin = 1 ]; then pin_session "$bpid" "$BACKEND_CPU"; fi
  wcpu=$(awk '{print $1 + $2}' "$out.time")
  local mem; mem=$(mem_kb "$spid")
  local wj
  if [ "$mode" = h2c ]; then
    wj=$(python3 "$PB_DIR/h2load_json.py" "$out.txt" "$out.log" "$DURATION") ||
      die "h2load produced no result for $name (see $out.txt)"
  else
    wj=$(sed -n 's/^PBJSON //p' "$out.txt")
    [ -n "$wj" ] || die "wrk produced no result for $name (see $out.txt)"
  fi
  delta() { echo "$1 $2" | awk '{printf "[%d, %d]", $3-$1, $4-$2}'; }
  printf '{"mode":"%s","client":"%s","target":"%s","rep":%d,"conns":%d,"clk_tck":%d,"server_ticks":%d,"backend_ticks":%d,"same_server_backend":%s,"wrk_cpu_s":%s,"cpu_window_s":%s,"cpu_loadgen":%s,"cpu_proxy":%s,"cpu_all":%s,"rss_kb":%d,"pss_kb":%d,"time_wait":%d,"backend_conns":%d,"wrk":%s}\n' \
    "$mode" "$client" "$name" "$rep" "$conns" "$CLK_TCK" $((s1 - s0)) $((b1 - b0)) "$([ "$spid" = "$bpid" ] && echo true || echo false)" \
    "$wcpu" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b - a) / 1e9}')" \
    "$(delta "$l0" "$l1")" "$(delta "$p0" "$p1")" "$(delta "$a0" "$a1")" \
    ${mem% *} ${mem#* } "$tw" $((c1 - c0 - 1)) "$wj" >> "$RES"
  log "  $mode $name rep $rep: $(python3 -c "import json, sys
w = json.loads(sys.argv[1])
errs = sum(w[k] for k in ('err_connect', 'err_read', 'err_write', 'err_timeout', 'non2xx3xx'))
print(f'{w[\"requests\"] / w[\"duration_us\"] * 1e6:,.0f} req/s, p99 {w[\"p99_us\"] / 1000:.2f} ms, {errs} errors')" "$wj"), TIME-WAIT $tw"
}

# ---- warm-up (fills keep-alive pools, faults in memory) -------------------------
# (h2c runs warm up for 1 s each on their own: h2load --warm-up-time.)
for t in "${TARGETS[@]}"; do
  read -r name port _ <<< "$t"
  taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${WARMUP}s" "http://127.0.0.1:$port/" > /dev/null 2>&1
done

# ---- measured runs: interleaved rounds (A B C D, B C D A, C D A B, ...) --------
# Each round starts one target later than the one before, so that no target always runs at the
# same place in a round: in the close mode each run leaves its requests' TIME-WAIT sockets (60 s)
# to the runs after it, and a target always run last would always meet the most of them.
for ((rep = 1; rep <= REPS; rep++)); do
  log "round $rep/$REPS"
  for mode in $MODES; do
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
      t=${TARGETS[$(((i + rep - 1) % ${#TARGETS[@]}))]}
      read -r name port pname h2port <<< "$t"
      [ "$mode" = h2c ] && port=$h2port
      bench_one "$mode" "$name" "$port" "$pname" "$rep"
    done
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
    read -r name port _ <<< "$t"
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

# ---- bursts of weight changes under a fixed load (case C15) ---------------------
if [ "$SWAPS" = 1 ]; then
  swaps_all
fi

# ---- idle memory of ours (optional hook, e.g. bench/idle_rss.sh) ---------------
if [ -n "${OURS_IDLE_CMD:-}" ]; then
  log "idle memory: $OURS_IDLE_CMD"
  bash -c "$OURS_IDLE_CMD" > "$PB_TMP/idle.log" 2>&1 || log "  OURS_IDLE_CMD failed (see $PB_TMP/idle.log)"
  tail -n 3 "$PB_TMP/idle.log" | sed 's/^/  /' >&2
fi

echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$PB_TMP/env.txt"
{
  python3 "$PB_DIR/report.py" "$PB_TMP"
  if [ -s "$PB_TMP/swaps.jsonl" ]; then python3 "$PB_DIR/swaps_report.py" md "$PB_TMP/swaps.jsonl"; fi
} | tee "$PB_TMP/report.md"
