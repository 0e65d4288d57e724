#!/usr/bin/env bash
# fuzz/run.sh — every cargo-fuzz target in turn, SECONDS each (default 300), one libFuzzer process (one
# core: no -jobs/-workers, which would also scatter fuzz-N.log files in the working directory), starting from
# and adding to the committed corpus; then `cargo fuzz cmin` shrinks each corpus. Prints one line per
# target: time, executions, corpus size before and after cmin, and whether it crashed.
#
# usage: fuzz/run.sh [seconds] [target...]          (needs nightly and cargo-fuzz; docs/fuzzing.md)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECS=${1:-300}
# cargo-fuzz build flags: -O (release, no debug assertions) by default, the build `cargo fuzz build -O`
# makes; FLAGS=-a (release with debug assertions and overflow checks) finds more, and builds anew.
FLAGS=${FLAGS:--O}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || mapfile -t TARGETS < <(cargo +nightly fuzz list)
logs=$(mktemp -d /tmp/crossfade-fuzz.XXXXXX)
status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  before=$(ls "fuzz/corpus/$t" | wc -l)
  result=ok
  cargo +nightly fuzz run $FLAGS "$t" "fuzz/corpus/$t" -- -max_total_time="$SECS" \
    -print_final_stats=1 >"$logs/$t.log" 2>&1 || { result="CRASH (see $logs/$t.log, fuzz/artifacts/$t)"; status=1; }
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  grown=$(ls "fuzz/corpus/$t" | wc -l)
  cargo +nightly fuzz cmin $FLAGS "$t" "fuzz/corpus/$t" >"$logs/$t.cmin.log" 2>&1 || true
  after=$(ls "fuzz/corpus/$t" | wc -l)
  echo "$t: ${SECS}s, ${runs:-?} executions, corpus $before -> $grown -> $after after cmin: $result"
done
echo "logs: $logs"
exit "$status"
