#!/usr/bin/env bash
# bench/soak.sh — N back-to-back rollouts under steady load; does crossfade run leak?
#
# usage: bench/soak.sh [rollouts]          (default 100; about 6 s per rollout on 2 cores)
#
# Starts `crossfade run` (release build) on a spec with blue v1 (2 instances) and a state file, then
# steady keep-alive load through the proxy: h2load over HTTP/1.1 (4 connections) and h2c
# (2 connections), 20 requests a second per connection, in back-to-back 10 s runs until the soak
# ends. Then N rollouts one after another with `crossfade migrate` (green v2, v3, ... each a new
# workload; steps 50/100 held 1 s, analysis every 1 s), each waited for until it ends. After every
# rollout it samples the crossfade process's RSS (VmRSS) and open file descriptors (/proc/PID/fd).
#
# Prints one line per rollout, then the least-squares slope per rollout of RSS and of fds, over all
# rollouts and over the second half (after warm-up: pools, allocator arenas), the rollouts that did
# not complete, and the load's totals: requests, and h2load's failed requests (transport errors,
# timeouts and non-2xx answers: the client-visible errors). Not run in CI: it takes minutes and keeps both cores busy.
#
# Environment: CROSSFADE_BIN (default target/release/crossfade, built with SKIP_BUILD unset),
# KEEP=1 keeps the scratch directory.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-100}
BIN=${CROSSFADE_BIN:-$ROOT/target/release/crossfade}
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${CROSSFADE_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release --locked --bin crossfade)
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }

dir=$(mktemp -d /tmp/crossfade-soak.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listen=$(free_port); admin=$(free_port)
pids=()
cleanup() {
  touch "$dir/stop"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT

app() { # name version instances
  cat <<YAML
$1:
  name: $2
  command: $BIN
  args: [sample-app, --port, "{port}", --version, $2]
  instances: $3
  readiness: { interval: 50ms, deadline: 10s }
  stop_grace: 2s
YAML
}
{
  echo "listen: 127.0.0.1:$listen"
  echo "admin: 127.0.0.1:$admin"
  echo "state_file: $dir/state.json"
  echo "route: { name: web, path_prefix: / }"
  app blue v1 2
  cat <<YAML
rollout:
  steps: [50, 100]
  hold: 1s
  progress_deadline: 60s
  drain_timeout: 2s
  analysis: { interval: 1s, max_error_rate: 1%, min_requests: 10, max_inconclusive: 5 }
YAML
} >"$dir/spec.yaml"

RUST_LOG=warn "$BIN" run "$dir/spec.yaml" 2>"$dir/run.log" & cf=$!; pids+=($cf)
for _ in $(seq 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" 2>/dev/null && break
  sleep 0.2
done
curl -fsS -o /dev/null "http://127.0.0.1:$admin/readyz" || { cat "$dir/run.log" >&2; exit 1; }

load() { # name, h2load flags...
  local name=$1; shift
  while [ ! -e "$dir/stop" ]; do
    h2load -D 10 --rps 20 -m 1 "$@" "http://127.0.0.1:$listen/" >>"$dir/$name.out" 2>&1 || true
  done
}
load h1 --h1 -c 4 -t 1 & pids+=($!)
load h2 -c 2 -t 1 & pids+=($!)
sleep 3

rollout() { curl -fsS "http://127.0.0.1:$admin/rollout"; }
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
sample() { # rss_kib fds
  echo "$(awk '/^VmRSS/ {print $2}' "/proc/$cf/status") $(ls "/proc/$cf/fd" | wc -l)"
}
read -r rss0 fd0 < <(sample)
echo "start: RSS ${rss0} KiB, fds $fd0; $N rollouts; scratch $dir"
: >"$dir/samples"
failed=0
started=$(date +%s)
for i in $(seq "$N"); do
  app green "v$((i + 1))" 1 >"$dir/green.yaml"
  RUST_LOG=warn "$BIN" migrate "$dir/green.yaml" --admin "127.0.0.1:$admin" >/dev/null
  phase=
  for _ in $(seq 600); do
    state=$(rollout | field 'd["rollout"]["id"], d["rollout"]["phase"], d["running"]')
    case "$state" in
      "$i "*" False") phase=$(echo "$state" | cut -d' ' -f2); break ;;
    esac
    sleep 0.1
  done
  [ "$phase" = Completed ] || failed=$((failed + 1))
  read -r rss fd < <(sample)
  echo "$i $rss $fd" >>"$dir/samples"
  printf 'rollout %3d: %-10s RSS %6d KiB  fds %4d\n' "$i" "${phase:-timeout}" "$rss" "$fd"
done
elapsed=$(( $(date +%s) - started ))
touch "$dir/stop"
wait "${pids[1]}" "${pids[2]}" 2>/dev/null || true

python3 - "$dir/samples" "$N" "$failed" "$elapsed" "$dir/h1.out" "$dir/h2.out" <<'PY'
import re, sys
samples = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
n, failed, elapsed = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def slope(points):
    if len(points) < 2:
        return float("nan")
    xs, ys = zip(*points)
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0
half = samples[len(samples) // 2:]
for name, col, unit in (("RSS", 1, "KiB"), ("fds", 2, "")):
    every = slope([(s[0], s[col]) for s in samples])
    late = slope([(s[0], s[col]) for s in half])
    first, last = samples[0][col], samples[-1][col]
    print(f"{name}: first {first} {unit}, last {last} {unit}, slope {every:+.2f} {unit}/rollout "
          f"(second half {late:+.2f})")
print(f"rollouts: {n} in {elapsed} s, {failed} did not complete")
totals = {"requests": 0, "succeeded": 0, "failed": 0, "errored": 0, "timeout": 0, "non2xx": 0}
for proto, path in (("h1", sys.argv[5]), ("h2", sys.argv[6])):
    text = open(path).read()
    req = [tuple(map(int, m)) for m in re.findall(
        r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)]
    codes = [tuple(map(int, m)) for m in re.findall(
        r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)]
    t = [sum(c) for c in zip(*req)] or [0] * 5
    bad = sum(c[1] + c[2] + c[3] for c in codes)
    print(f"load {proto}: {len(req)} h2load runs, {t[0]} requests, {t[1]} succeeded, {t[2]} failed, "
          f"{t[3]} errored, {t[4]} timeout, non-2xx {bad}")
    for k, v in zip(("requests", "succeeded", "failed", "errored", "timeout"), t):
        totals[k] += v
    totals["non2xx"] += bad
# h2load's "failed" already holds the errored and timed-out requests and every 4xx/5xx answer.
print(f"client-visible errors: {totals['failed']} of {totals['requests']} requests "
      f"(non-2xx {totals['non2xx']})")
PY
