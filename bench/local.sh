# bench/local.sh — sourced by bench/profile.sh and bench/idle.sh: two `crossfade sample-app`
# backends (blue v1, green v2) and a `crossfade proxy --workers 1` config splitting 90/10 between
# them, on free loopback ports, all killed when the script exits.
#
# Needs BIN (the crossfade binary) and dir (a scratch directory). Sets blue, green, listen, admin
# (ports) and pids; `local_setup EXTRA_YAML [ROUTE_YAML]` writes $dir/proxy.yaml with EXTRA_YAML
# (top-level keys, may be empty) and ROUTE_YAML (keys of the route, e.g. `shadow: { percent: 100 }`)
# and starts the backends; `wait_proxy TRIES` polls the proxy until it answers
# (every 0.2 s).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# BENCH_PORTS="BLUE GREEN LISTEN ADMIN" pins the ports (a shared machine's assigned range).
if [ -n "${BENCH_PORTS:-}" ]; then
  read -r blue green listen admin <<<"$BENCH_PORTS"
else
  blue=$(free_port); green=$(free_port); listen=$(free_port); admin=$(free_port)
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

local_setup() {
  RUST_LOG=warn "$BIN" sample-app --port "$blue" --version v1 >"$dir/blue.log" 2>&1 & pids+=($!)
  RUST_LOG=warn "$BIN" sample-app --port "$green" --version v2 >"$dir/green.log" 2>&1 & pids+=($!)
  cat >"$dir/proxy.yaml" <<YAML
listen: 127.0.0.1:$listen
admin: 127.0.0.1:$admin
$1
routes:
  - name: bench
    path_prefix: /
    blue:  { endpoints: [127.0.0.1:$blue], weight: 90 }
    green: { endpoints: [127.0.0.1:$green], weight: 10 }
${2:+    $2}
YAML
}

wait_proxy() {
  for _ in $(seq "$1"); do
    curl -fsS -o /dev/null "http://127.0.0.1:$listen/" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "the proxy did not answer on 127.0.0.1:$listen; see $dir" >&2
  return 1
}
