#!/usr/bin/env bash
# bench/run.sh — Crossfade's proxy next to nginx, HAProxy and no proxy at all, on this machine.
#
# usage: bench/run.sh [--pgo | --standin | --floor] [duration_s]   (default 10 s per measured run; ~9 min)
#
# 1. builds the release binary (`cargo build --release --bin crossfade`; with --pgo, the
#    profile-guided build of bench/pgo.sh, about three release builds' time);
# 2. installs the peers and load generators (bench/peer/setup.sh: nginx haproxy wrk h2load ...);
# 3. runs the peer harness (bench/peer/run.sh) with "ours" = `crossfade proxy` on a generated
#    config splitting 90/10 (bench/ours.sh), and weight switches through the admin API
#    (PUT /routes/$OURS_ROUTE/weights {"blue": <bp>, "green": <bp>}). It measures three client
#    modes against direct, nginx, HAProxy and ours: HTTP/1.1 keep-alive, HTTP/1.1 with a new
#    connection per request, and h2c (prior knowledge; crossfade takes it on its one listener);
# 4. last, crossfade's RSS with IDLE_CONNS=10000 idle keep-alive client connections
#    (bench/idle_rss.sh, which runs bench/idle.sh; scaled when the open-file limit is lower).
# The markdown report goes to stdout and to bench/out/report-<UTC time>.md; raw data and logs stay
# in the /tmp/peerbench.* directory the harness prints.
#
# --standin: "ours" is HAProxy with bench/peer/ours-standin.haproxy.cfg instead of crossfade (no
#            build, h2c on OURS_H2C_PORT=18098, no idle measurement): checks the harness itself.
# --pgo:     "ours" is the profile-guided build (bench/pgo.sh; SKIP_BUILD=1 takes the one it built
#            last, target/pgo/<host>/release/crossfade): the build the README's figures are for.
# --floor:   "ours" is the floor, a minimal hyper 1 proxy (proxy/examples/floor.rs, built here in
#            release): what hyper alone reaches against the same peers in the same rounds, so that
#            crossfade's figures can be told apart from hyper's. HTTP/1.1 only (MODES default
#            "ka close"), no weight switch, no idle measurement.
# Env: OURS_PORT=18099 OURS_ADMIN_PORT=19901 OURS_ROUTE=bench, SKIP_BUILD=1 (use the binary as
#      built), SKIP_SETUP=1, CROSSFADE_BIN (default: the release binary in cargo's target dir),
#      IDLE=0 (skip the idle measurement), IDLE_CONNS=10000,
#      and every knob of bench/peer/run.sh: MODES REPS CONNS H2C_CONNS H2C_STREAMS WARMUP H2LOAD
#      RATE RATE_CONNS SWITCH ...
# Never run it as a timed test: it saturates both cores for minutes.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH")
PEER=$BENCH/peer

standin=0 floor=0 pgo=0
if [ "${1:-}" = --pgo ]; then pgo=1; shift; fi
if [ "${1:-}" = --standin ]; then standin=1; shift; fi
if [ "${1:-}" = --floor ]; then floor=1; shift; fi
DURATION=${1:-10}
export OURS_PORT=${OURS_PORT:-18099}
export OURS_ADMIN_PORT=${OURS_ADMIN_PORT:-19901}
export OURS_ROUTE=${OURS_ROUTE:-bench}

log() { printf '[bench] %s\n' "$*" >&2; }

[ "${SKIP_SETUP:-0}" = 1 ] || "$PEER/setup.sh" >&2

if [ "$standin" = 1 ]; then
  export OURS_CMD="haproxy -db -f $(printf '%q' "$PEER/ours-standin.haproxy.cfg")"
  export OURS_SWITCH_CMD='echo "set weight pools/green $GREEN_W; set weight pools/blue $BLUE_W" | socat -t 2 stdio "unix-connect:$PB_TMP/ours/admin.sock" >&2'
  export OURS_DESC="HAProxy stand-in (bench/peer/ours-standin.haproxy.cfg), not crossfade"
  export OURS_H2C_PORT=${OURS_H2C_PORT:-18098}   # HAProxy: a second bind with `proto h2`
  IDLE=0                                         # the idle figure is crossfade's own
elif [ "$floor" = 1 ]; then
  log "cargo build --release -p crossfade-proxy --example floor"
  (cd "$ROOT" && cargo build --release -p crossfade-proxy --example floor) >&2
  target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  export FLOOR_BIN=$target/release/examples/floor
  export OURS_CMD; OURS_CMD=$(printf '%q' "$BENCH/floor.sh")
  export OURS_DESC="the floor: a minimal hyper 1 proxy (proxy/examples/floor.rs), not crossfade"
  export MODES=${MODES:-ka close} SWITCH=0
  IDLE=0
else
  if [ "$pgo" = 1 ]; then
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
      log "bench/pgo.sh (profile-guided release build)"
      "$BENCH/pgo.sh" >&2
    fi
    CROSSFADE_BIN=${CROSSFADE_BIN:-$ROOT/target/pgo/$(rustc -vV | sed -n 's/^host: //p')/release/crossfade}
  elif [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release --bin crossfade"
    (cd "$ROOT" && cargo build --release --bin crossfade) >&2
  fi
  if [ -z "${CROSSFADE_BIN:-}" ]; then
    target=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    CROSSFADE_BIN=$target/release/crossfade
  fi
  [ -x "$CROSSFADE_BIN" ] || { log "no binary at $CROSSFADE_BIN"; exit 1; }
  export CROSSFADE_BIN
  export OURS_CMD; OURS_CMD=$(printf '%q' "$BENCH/ours.sh")
  # BLUE_W/GREEN_W are percents (the harness exports them before each call); the API takes basis points.
  export OURS_SWITCH_CMD='curl -fsS -o /dev/null -X PUT -H "content-type: application/json" -d "{\"blue\": $((BLUE_W * 100)), \"green\": $((GREEN_W * 100))}" "http://127.0.0.1:$OURS_ADMIN_PORT/routes/$OURS_ROUTE/weights"'
  export OURS_DESC; OURS_DESC="crossfade $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?') ($([ "$pgo" = 1 ] && echo "profile-guided build, " || true)$CROSSFADE_BIN proxy, via bench/ours.sh)"
  # The weight-change bursts of case C15 (bench/peer/swaps.sh) reach it the same way.
  export OURS_SWAPS_TARGET="ours:$OURS_ADMIN_PORT:$OURS_ROUTE"
  # crossfade serves HTTP/1.1 and h2c (prior knowledge) on its one listener.
  export OURS_H2C_PORT=$OURS_PORT
  # Idle memory, run by the harness after everything else (its report reads $PB_TMP/idle.json).
  if [ "${IDLE:-1}" != 0 ]; then
    export IDLE_CONNS=${IDLE_CONNS:-10000}
    export OURS_IDLE_CMD; OURS_IDLE_CMD="$(printf '%q' "$BENCH/idle_rss.sh") \"\$PB_TMP/idle.json\""
  fi
fi

mkdir -p "$BENCH/out"
report=$BENCH/out/report-$(date -u +%Y%m%dT%H%M%SZ).md
"$PEER/run.sh" "$DURATION" | tee "$report"
log "report saved to $report"
