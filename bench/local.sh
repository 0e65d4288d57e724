# bench/local.sh — sourced by bench/profile.sh and bench/idle.sh: two `crossfade sample-app`
# backends (blue v1, green v2) and a `crossfade proxy --workers 1` config splitting 90/10 between
# them, on free loopback ports, all killed when the script exits.
#
# Needs BIN (the crossfade binary) and dir (a scratch directory). Sets blue, green, listen, admin
# (ports) and pids; `local_setup EXTRA_YAML [ROUTE_YAML]` writes $dir/proxy.yaml with EXTRA_YAML
# (top-level keys, may be empty) and ROUTE_YAML (keys of the route, e.g. `shadow: { percent: 100 }`)
# and starts the backends; `wait_backends` waits until both answer; `wait_proxy TRIES` polls the
# proxy until it answers (every 0.2 s), `wait_proxy_h2c TRIES` the same over h2c (a peer's h2c listener takes no
# HTTP/1.1); `peer_cmd nginx|haproxy [h2c]` writes that peer's config for the same split and sets
# `peer` to its command line.

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

# Polls both backends until each answers (every 0.1 s, 10 s at most each): nginx marks an upstream
# down for 10 s after a refused connect, so a peer must not start before them.
wait_backends() {
  local port
  for port in "$blue" "$green"; do
    for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && break; sleep 0.1; done
  done
}

wait_proxy() {
  for _ in $(seq "$1"); do
    curl -fsS -o /dev/null "http://127.0.0.1:$listen/" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "the proxy did not answer on 127.0.0.1:$listen; see $dir" >&2
  return 1
}

wait_proxy_h2c() {
  for _ in $(seq "$1"); do
    h2load -n 1 -c 1 "http://127.0.0.1:$listen/" 2>/dev/null | grep -q "1 succeeded" && return 0
    sleep 0.2
  done
  echo "the proxy did not answer h2c on 127.0.0.1:$listen; see $dir" >&2
  return 1
}

# nginx (one worker in the foreground, no master process, so that a tracer sees the worker itself)
# or HAProxy (one thread) on $listen, splitting 90/10 over the backends with upstream keep-alive,
# as the peer harness runs them; with a second argument, its listener speaks h2c instead of
# HTTP/1.1. Sets `peer` (an array) to the command line.
peer_cmd() {
  local h2=${2:-}
  case $1 in
    nginx)
      cat >"$dir/nginx.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $dir/nginx.pid; error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;   # the default 1000 ends each client connection (HTTP/2: GOAWAY) after 1000 requests
  upstream bench { server 127.0.0.1:$blue weight=9; server 127.0.0.1:$green weight=1; keepalive 256; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$listen${h2:+ http2};
    location / { proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
      peer=(nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf") ;;
    haproxy)
      printf '%s\n' global '  nbthread 1' defaults '  mode http' '  timeout connect 5s' \
        '  timeout client 30s' '  timeout server 30s' frontend\ bench "  bind 127.0.0.1:$listen${h2:+ proto h2}" \
        '  default_backend bench' backend\ bench '  balance roundrobin' '  http-reuse always' \
        "  server blue 127.0.0.1:$blue weight 9" "  server green 127.0.0.1:$green weight 1" \
        >"$dir/haproxy.cfg"
      peer=(haproxy -db -f "$dir/haproxy.cfg") ;;
    *) echo "peer '$1': expected nginx or haproxy" >&2; return 2 ;;
  esac
}
