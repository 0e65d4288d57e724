#!/usr/bin/env bash
# bench/idle_rss.sh — the idle-memory figure for bench/run.sh's report: runs bench/idle.sh and
# writes what it measured as JSON.
#
# usage: bench/idle_rss.sh OUT_JSON        (bench/run.sh sets it as the harness's OURS_IDLE_CMD)
#
# IDLE_CONNS (default 10000) idle keep-alive client connections are asked for. bench/idle.sh needs
# an open-file limit of 2N+1000 (one descriptor per client connection and one per held upstream
# connection); when the hard limit cannot be raised that far, N falls to what it allows (rounded
# down to a multiple of 100; 9,500 under a hard limit of 20,000) and the figure at IDLE_CONNS is
# scaled from it: RSS before + bytes per connection × IDLE_CONNS, marked `"scaled": true`.
# OUT_JSON fields: requested, measured (connections), hard_limit, rss_before_mib, rss_with_mib,
# per_conn_bytes, rss_at_requested_mib (MiB = 2^20 bytes), scaled, target_mib (64, issue 3), ok,
# error (when not ok), raw (bench/idle.sh's output). bench/idle.sh's exit status is this script's.
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: bench/idle_rss.sh OUT_JSON}
REQUESTED=${IDLE_CONNS:-10000}
TARGET_MIB=64

hard=$(ulimit -Hn)
n=$REQUESTED
if ! (ulimit -n $((2 * REQUESTED + 1000))) 2>/dev/null; then
  n=$(( (hard - 1000) / 2 / 100 * 100 ))
  [ "$n" -le "$REQUESTED" ] || n=$REQUESTED
fi
raw=$(mktemp /tmp/crossfade-idle-rss.XXXXXX)
trap 'rm -f "$raw"' EXIT
rc=0
if [ "$n" -lt 1000 ]; then
  echo "the open-file hard limit ($hard) allows fewer than 1000 idle connections" > "$raw"
  rc=1
else
  echo "bench/idle.sh $n  (asked for $REQUESTED; open-file hard limit $hard)" >&2
  "$BENCH/idle.sh" "$n" > "$raw" 2>&1 || rc=$?
fi
cat "$raw" >&2

# bench/idle.sh prints (among others):
#   RSS before: B MiB; with N idle keep-alive connections: W MiB
#   per connection: P bytes (...)
python3 - "$raw" "$OUT" "$REQUESTED" "$n" "$hard" "$TARGET_MIB" "$rc" <<'PY'
import json, re, sys
raw_path, out, requested, n, hard, target, rc = sys.argv[1:]
raw = open(raw_path).read()
requested, n, target, rc = int(requested), int(n), int(target), int(rc)
res = {"requested": requested, "measured": n, "target_mib": target,
       "hard_limit": int(hard) if hard.isdigit() else hard,
       "scaled": n != requested, "raw": raw, "ok": False}
before = re.search(r"RSS before: (\d+(?:\.\d+)?) MiB", raw)
with_ = re.search(r"with (\d+) idle keep-alive connections: (\d+(?:\.\d+)?) MiB", raw)
per = re.search(r"per connection: (\d+) bytes", raw)
if rc != 0:
    res["error"] = f"bench/idle.sh exited {rc}"
elif not (before and with_ and per):
    res["error"] = "bench/idle.sh's output has no 'RSS before: ... MiB; with N idle keep-alive connections: ... MiB' and 'per connection: ... bytes' lines"
else:
    b, w, pc = float(before.group(1)), float(with_.group(2)), int(per.group(1))
    res.update(ok=True, rss_before_mib=b, rss_with_mib=w, per_conn_bytes=pc,
               rss_at_requested_mib=w if n == requested else b + pc * requested / 2**20)
json.dump(res, open(out, "w"), indent=1)
PY
exit "$rc"
