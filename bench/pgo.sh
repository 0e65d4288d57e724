#!/usr/bin/env bash
# bench/pgo.sh — a profile-guided (PGO) release build of `crossfade`, trained on the proxy's request
# path.
#
# usage: bench/pgo.sh              (~3 release builds' worth of time on two cores; prints the binary)
#        PGO_REQUESTS=200000 bench/pgo.sh   (keep-alive GETs of the training run; the other loads scale)
#
# Why: the proxy's request path is bound by instruction-cache misses, not by instructions
# (docs/bench-2026-12-02d-icache.md): ~1,950 I1 misses per request against nginx's ~740. PGO is the
# compiler's tool for exactly that: with the measured branch and call counts, LLVM inlines only at
# hot call sites, moves cold blocks out of hot functions and splits functions into hot and cold
# parts, so the code one request runs takes fewer cache lines (rustc's own dist builds, Chrome and
# Firefox ship PGO binaries for the same reason; https://doc.rust-lang.org/rustc/profile-guided-optimization.html).
#
# Steps:
# 1. an instrumented release build (`-Cprofile-generate`, the release profile's fat LTO) in
#    target/pgo-generate;
# 2. a training run on loopback: two `crossfade sample-app` backends and `crossfade proxy --workers 1`
#    splitting 90/10 (bench/local.sh), under h2load and wrk: HTTP/1.1 keep-alive GETs, HTTP/1.1 with
#    a new connection per request, h2c (prior knowledge) streams, HTTP/1.1 uploads, weight changes
#    through the admin API and /metrics scrapes. Only the proxy's profile is kept (the backends write
#    theirs elsewhere), and the proxy writes it when it exits after SIGTERM;
# 3. `llvm-profdata merge`;
# 4. the release build with `-Cprofile-use` in target/pgo; the binary's path is printed last.
# Both builds pass `--target <host>`, so RUSTFLAGS reach the binary's crates and not build scripts
# or proc macros (cargo's rule for RUSTFLAGS with an explicit target).
#
# Needs h2load and wrk (nghttp2-client, wrk), curl, and an llvm-profdata of rustc's LLVM major
# version: rustup's llvm-tools component, or `llvm-profdata-<major>` from the `llvm-<major>` Debian
# package. The profile format is tied to LLVM's version, so another major version's tool refuses the
# raw profiles.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REQUESTS=${PGO_REQUESTS:-200000}

host=$(rustc -vV | sed -n 's/^host: //p')
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=""
for candidate in "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata" "llvm-profdata-$llvm_major"; do
  if command -v "$candidate" >/dev/null 2>&1; then profdata=$candidate; break; fi
done
[ -n "$profdata" ] || {
  echo "no llvm-profdata for LLVM $llvm_major (rustc's): \`rustup component add llvm-tools\`, or" \
    "\`apt-get install llvm-$llvm_major\` for llvm-profdata-$llvm_major" >&2
  exit 1
}
for tool in h2load wrk curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install nghttp2-client wrk curl)" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/crossfade-pgo.XXXXXX)
log() { printf '[pgo] %s\n' "$*" >&2; }

log "1/4 instrumented build (target/pgo-generate)"
# A fixed path (overridden by LLVM_PROFILE_FILE below), so that a second run reuses the build.
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$ROOT/target/pgo-generate/default-profiles" \
  cargo build --release --locked --bin crossfade --target "$host" --target-dir target/pgo-generate
BIN=$ROOT/target/pgo-generate/$host/release/crossfade

log "2/4 training run ($REQUESTS keep-alive GETs and the rest; scratch in $dir)"
mkdir -p "$dir/proxy" "$dir/backends"
# The backends run the same instrumented binary: their profiles go where nothing reads them.
export LLVM_PROFILE_FILE="$dir/backends/%p.profraw"
# shellcheck source=bench/local.sh
. "$ROOT/bench/local.sh"
local_setup "" ""
LLVM_PROFILE_FILE="$dir/proxy/%p.profraw" RUST_LOG=warn \
  "$BIN" proxy "$dir/proxy.yaml" --workers 1 >"$dir/proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
wait_proxy 50
url=http://127.0.0.1:$listen/
weights() {
  curl -fsS -o /dev/null -X PUT -H 'content-type: application/json' \
    -d "{\"blue\": $1, \"green\": $2}" "http://127.0.0.1:$admin/routes/bench/weights"
}
head -c 4096 /dev/urandom >"$dir/upload.bin"
h2load --h1 -n "$REQUESTS" -c 64 "$url" >"$dir/ka.txt"
weights 5000 5000
wrk -t1 -c16 -d5s -H 'Connection: close' "$url" >"$dir/close.txt"
h2load -n $((REQUESTS / 2)) -c 16 -m 10 "$url" >"$dir/h2c.txt"
weights 9000 1000
h2load --h1 -n $((REQUESTS / 10)) -c 16 -d "$dir/upload.bin" "$url" >"$dir/upload.txt"
# Scrapes as Prometheus asks (OpenMetrics first) and as curl and the agents do (the text format
# 0.0.4): both encoders of /metrics are trained (proxy/src/exposition.rs).
prometheus_accept='application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1'
for _ in 1 2 3; do
  curl -fsS -o /dev/null -H "Accept: $prometheus_accept" "http://127.0.0.1:$admin/metrics"
  curl -fsS -o /dev/null "http://127.0.0.1:$admin/metrics"
done
for f in ka upload h2c; do
  grep -q ' 0 failed' "$dir/$f.txt" || { echo "training load $f had failures: $dir/$f.txt" >&2; exit 1; }
done
kill -TERM "$proxy_pid"
wait "$proxy_pid" || true
ls "$dir"/proxy/*.profraw >/dev/null 2>&1 || { echo "the proxy wrote no profile; see $dir/proxy.log" >&2; exit 1; }

log "3/4 $profdata merge"
"$profdata" merge -o "$dir/crossfade.profdata" "$dir"/proxy/*.profraw

log "4/4 release build with the profile (target/pgo)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$dir/crossfade.profdata" \
  cargo build --release --locked --bin crossfade --target "$host" --target-dir target/pgo
cp "$dir/crossfade.profdata" target/pgo/crossfade.profdata
log "the profile: target/pgo/crossfade.profdata; the binary:"
echo "$ROOT/target/pgo/$host/release/crossfade"
