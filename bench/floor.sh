#!/usr/bin/env bash
# bench/floor.sh — the peer harness's OURS_CMD for `bench/run.sh --floor`: runs the floor
# (proxy/examples/floor.rs, a minimal hyper 1 proxy) in the foreground on the harness's ports and
# 90/10 split. Variables: OURS_PORT BLUE_ADDR GREEN_ADDR GREEN_W (percent) from bench/peer/lib.sh,
# FLOOR_BIN from bench/run.sh.
set -euo pipefail
: "${OURS_PORT:?run me through bench/run.sh --floor}" "${BLUE_ADDR:?}" "${GREEN_ADDR:?}" "${GREEN_W:?}" "${FLOOR_BIN:?}"
exec "$FLOOR_BIN" "127.0.0.1:$OURS_PORT" "$BLUE_ADDR" "$GREEN_ADDR" "$((GREEN_W * 100))"
