#!/usr/bin/env bash
# peerbench/swaps.sh — case C15: does a burst of live weight changes move latency or lose anything?
#
# Sourced by run.sh (SWAPS=1), which calls swaps_all on its running proxies; not standalone. Ours
# takes part when OURS_SWAPS_TARGET says how to change its weights (swaps_changes.py's TARGET:
# bench/run.sh sets `ours:<admin port>:<route>` for crossfade).
#
# For HAProxy (runtime API: `set weight`, no reload) and ours ($OURS_SWITCH_CMD), in turn, under the
# case's traffic, run for the whole measurement:
#   - h2load --h1 -c$SWAPS_CONNS --rps=$SWAPS_RPS: long-lived keep-alive connections at a fixed
#     rate (default 32 x 16 = 512 req/s; the case says 500 over 32), every request's start time
#     and latency in h2load's log;
#   - newconns.py: $SWAPS_NEW new connections per second (default 50), each one GET with
#     `Connection: close`; every refused, reset or unanswered connection and non-2xx counted.
# swaps_changes.py (one process on the load generator's core, the same for both targets: no
# process started per change) cuts the time into windows, alternately SWAPS_QUIET seconds with no
# change (baseline) and $SWAPS_CHANGES changes SWAPS_GAP_MS apart (default 100 x 100 ms, the
# case's) to random weights in [0,100] summing to 100, SWAPS_ROUNDS times (default 3). swaps_report.py then compares each
# round's p99 during the changes with the baseline before it (the case: within 10 %) and sums the
# errors; the proxy's PID and listening socket (inode) are recorded before and after (the case:
# no listener closed or re-bound); for ours, the routing-table generation's rise (the case: exactly
# the number of changes) from its admin API.
# Output: one JSON line per target in $PB_TMP/swaps.jsonl, raw logs in $PB_TMP/swaps-<name>.*.

SWAPS_CONNS=${SWAPS_CONNS:-32}
SWAPS_RPS=${SWAPS_RPS:-16}          # per connection
SWAPS_NEW=${SWAPS_NEW:-50}          # new connections per second
SWAPS_QUIET=${SWAPS_QUIET:-10}      # seconds of baseline before each burst
SWAPS_CHANGES=${SWAPS_CHANGES:-100} # weight changes per burst
SWAPS_GAP_MS=${SWAPS_GAP_MS:-100}   # between two changes
SWAPS_ROUNDS=${SWAPS_ROUNDS:-3}
export SWAPS_CONNS SWAPS_RPS SWAPS_NEW SWAPS_QUIET SWAPS_CHANGES SWAPS_GAP_MS SWAPS_ROUNDS  # for the report

# listen_inode PORT : the inode of the socket listening on 127.0.0.1:PORT (empty if none).
listen_inode() { ss -Hltne "sport = :$1" 2>/dev/null | sed -n 's/.*ino:\([0-9]*\).*/\1/p' | head -n 1; }

# ours_generation : the routing table's generation, from ours' admin API (/status).
ours_generation() {
  curl -fsS "http://127.0.0.1:$OURS_ADMIN_PORT/status" 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["generation"])' 2>/dev/null || echo null
}

# swaps_one NAME PORT SETTER CHANGER : CHANGER is swaps_changes.py's target (haproxy:<socket> or
# ours:<admin port>:<route>); SETTER sets the harness's 90/10 before and after.
swaps_one() {
  local name=$1 port=$2 setter=$3 changer=$4
  local base=$PB_TMP/swaps-$name
  "$setter" "$BLUE_W" "$GREEN_W"; sleep 1
  local pid ino0 ino1 gen0=null gen1=null
  pid=$(pid_of "$name"); ino0=$(listen_inode "$port")
  [ "$name" = ours ] && gen0=$(ours_generation)
  local total
  total=$(awk -v q="$SWAPS_QUIET" -v c="$SWAPS_CHANGES" -v g="$SWAPS_GAP_MS" -v r="$SWAPS_ROUNDS" \
    'BEGIN {printf "%d", 2 + r * (q + c * g / 1000 * 1.3) + q + 3}')
  rm -f "$base.h2load.log"
  taskset -c "$LOADGEN_CPU" h2load --h1 -t1 -c"$SWAPS_CONNS" --rps="$SWAPS_RPS" -D "$total" \
    --log-file="$base.h2load.log" "http://127.0.0.1:$port/" > "$base.h2load.txt" 2>&1 &
  local hpid=$!; echo "h2load-swaps-$name $hpid" >> "$PB_TMP/pids"
  taskset -c "$LOADGEN_CPU" python3 "$PB_DIR/newconns.py" "$port" "$SWAPS_NEW" "$total" \
    > "$base.newconns.json" 2> "$base.newconns.log" &
  local npid=$!; echo "newconns-swaps-$name $npid" >> "$PB_TMP/pids"
  sleep 2                                                    # warm-up: in no window
  taskset -c "$LOADGEN_CPU" python3 "$PB_DIR/swaps_changes.py" "$changer" "$SWAPS_ROUNDS" \
    "$SWAPS_QUIET" "$SWAPS_CHANGES" "$SWAPS_GAP_MS" > "$base.windows" 2> "$base.changes.err" ||
    log "  swaps $name: swaps_changes.py failed (see $base.changes.err)"
  wait "$hpid" "$npid" || true
  ino1=$(listen_inode "$port")
  [ "$name" = ours ] && gen1=$(ours_generation)
  local pid1 failed changes; pid1=$(pid_of "$name")
  failed=$(tail -n 1 "$base.changes.err" 2>/dev/null); [[ $failed =~ ^[0-9]+$ ]] || failed=$((SWAPS_ROUNDS * SWAPS_CHANGES))
  changes=$((SWAPS_ROUNDS * SWAPS_CHANGES - failed))
  python3 "$PB_DIR/swaps_report.py" one "$name" "$base" "$changes" "$pid" "$pid1" "${ino0:-null}" \
    "${ino1:-null}" "$gen0" "$gen1" >> "$PB_TMP/swaps.jsonl"
  log "  swaps $name: $(tail -n 1 "$PB_TMP/swaps.jsonl" | cut -c1-300)"
  "$setter" "$BLUE_W" "$GREEN_W"                              # restore 90/10
}

swaps_all() {
  : > "$PB_TMP/swaps.jsonl"
  log "weight-change bursts (case C15): $SWAPS_ROUNDS x ($SWAPS_QUIET s quiet, $SWAPS_CHANGES changes ${SWAPS_GAP_MS} ms apart) under $((SWAPS_CONNS * SWAPS_RPS)) req/s keep-alive + $SWAPS_NEW new connections/s"
  swaps_one haproxy "$HAPROXY_PORT" haproxy_set_weights "haproxy:$PB_TMP/haproxy/admin.sock"
  if [ -n "$OURS_CMD" ] && [ -n "${OURS_SWAPS_TARGET:-}" ]; then
    swaps_one ours "$OURS_PORT" ours_set_weights "$OURS_SWAPS_TARGET"
  else
    log "  ours: OURS_SWAPS_TARGET unset (bench/run.sh sets it for crossfade), swaps skipped"
  fi
}
