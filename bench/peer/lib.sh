# peerbench/lib.sh — shared helpers, sourced by run.sh and switch.sh.
#
# Everything runs on 127.0.0.1 from configs generated into a private temp dir
# ($PB_TMP). Every process we start is recorded in $PB_TMP/pids and killed by
# PID (and its own process group, which setsid gives it) on exit.
# shellcheck shell=bash

# ---------------------------------------------------------------- settings --
BLUE_PORT=${BLUE_PORT:-18081}         # backend "blue"  (nginx, return 200)
GREEN_PORT=${GREEN_PORT:-18082}       # backend "green" (same nginx instance)
NGINX_PORT=${NGINX_PORT:-18090}       # nginx proxy under test
HAPROXY_PORT=${HAPROXY_PORT:-18091}   # haproxy proxy under test
# h2c (cleartext HTTP/2, prior knowledge) client ports. nginx 1.22 serves either HTTP/1.1 or h2c
# on a cleartext port, never both, so nginx (backend and proxy) gets a second port; HAProxy gets a
# second `bind ... proto h2` in the same frontend. Upstream, every proxy still speaks HTTP/1.1.
BLUE_H2C_PORT=${BLUE_H2C_PORT:-18083}       # backend "blue" over h2c (the `direct` h2c target)
NGINX_H2C_PORT=${NGINX_H2C_PORT:-18092}     # nginx proxy, h2c listener
HAPROXY_H2C_PORT=${HAPROXY_H2C_PORT:-18093} # haproxy proxy, h2c bind
BACKEND_STATUS_PORT=${BACKEND_STATUS_PORT:-18084} # backend nginx's stub_status: connections accepted
# Client modes measured (run.sh): ka = HTTP/1.1 keep-alive, close = HTTP/1.1 with a new connection
# per request, h2c = HTTP/2 prior knowledge. Any subset, in this order of interleaving.
MODES=${MODES:-ka close h2c}
mode_on() { case " $MODES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
CONNS=${CONNS:-64}                    # wrk connections (keep-alive and close modes)
H2C_CONNS=${H2C_CONNS:-16}            # h2load connections in the h2c mode
H2C_STREAMS=${H2C_STREAMS:-10}        # h2load concurrent streams per connection (-m)
# Idle upstream connections nginx keeps: enough for every request in flight in any mode, so that
# no mode makes nginx close and reopen upstream connections (HAProxy and ours have no such cap).
NGINX_KEEPALIVE=${NGINX_KEEPALIVE:-$(( CONNS > H2C_CONNS * H2C_STREAMS ? CONNS : H2C_CONNS * H2C_STREAMS ))}
BLUE_W=${BLUE_W:-90}; GREEN_W=${GREEN_W:-10}

# ---- "OUR PROXY" SLOT -------------------------------------------------------
# OURS_CMD  : shell command that starts the team's proxy in the FOREGROUND
#             (no daemonizing), listening on 127.0.0.1:$OURS_PORT and splitting
#             $BLUE_W/$GREEN_W between $BLUE_ADDR and $GREEN_ADDR. It is run with
#             `bash -c "exec $OURS_CMD"`, pinned to the proxy core, and these
#             variables are exported for it to use:
#               OURS_PORT BLUE_ADDR GREEN_ADDR BLUE_W GREEN_W PB_TMP
#             Crossfade's is bench/ours.sh (set by bench/run.sh): it writes a
#             `crossfade proxy` config from these variables and execs the proxy.
# OURS_PORT : port it listens on (required when OURS_CMD is set).
# OURS_H2C_PORT (optional): where it takes h2c (HTTP/2 with prior knowledge) from
#             clients; default $OURS_PORT (crossfade serves HTTP/1.1 and h2c on one port).
# OURS_SWITCH_CMD (optional, switch.sh only): shell command that changes the
#             live weights to $BLUE_W/$GREEN_W (exported before each call),
#             Crossfade's (bench/run.sh): PUT /routes/$OURS_ROUTE/weights on the admin
#             port with {"blue": BLUE_W*100, "green": GREEN_W*100} (basis points).
# OURS_DESC (optional): how the report's environment block names "ours".
# Unset OURS_CMD => the "ours" target is skipped everywhere.
OURS_CMD=${OURS_CMD:-}
OURS_PORT=${OURS_PORT:-}
OURS_H2C_PORT=${OURS_H2C_PORT:-$OURS_PORT}
OURS_SWITCH_CMD=${OURS_SWITCH_CMD:-}
# -----------------------------------------------------------------------------

# CPU layout. The proxy under test always gets a core of its own; the load
# generator gets another. With only 2 cores the backend shares the load
# generator's core (see perf.md caveats); with >=3 it gets its own.
NCPU=$(nproc)
if   [ "$NCPU" -ge 3 ]; then LOADGEN_CPU=${LOADGEN_CPU:-0}; PROXY_CPU=${PROXY_CPU:-1}; BACKEND_CPU=${BACKEND_CPU:-2}
elif [ "$NCPU" -eq 2 ]; then LOADGEN_CPU=${LOADGEN_CPU:-0}; PROXY_CPU=${PROXY_CPU:-1}; BACKEND_CPU=${BACKEND_CPU:-0}
else                         LOADGEN_CPU=${LOADGEN_CPU:-0}; PROXY_CPU=${PROXY_CPU:-0}; BACKEND_CPU=${BACKEND_CPU:-0}
fi
CLK_TCK=$(getconf CLK_TCK)
PB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------- process tracking --
pb_init() {
  for t in nginx haproxy wrk h2load nghttp taskset setsid curl python3 socat ss; do
    command -v "$t" >/dev/null || die "$t missing — run ./setup.sh"
  done
  PB_TMP=$(mktemp -d /tmp/peerbench.XXXXXX)
  export PB_TMP
  : > "$PB_TMP/pids"
  trap pb_cleanup EXIT
  trap 'exit 130' INT TERM
  log "work dir: $PB_TMP  (cores: $NCPU; loadgen=cpu$LOADGEN_CPU proxy=cpu$PROXY_CPU backend=cpu$BACKEND_CPU)"
}

# start NAME CPU CMD... : start CMD in the background in its own session,
# pinned to CPU, stdout/stderr to $PB_TMP/NAME.log; records "NAME PID".
start() {
  local name=$1 cpu=$2; shift 2
  setsid taskset -c "$cpu" "$@" >"$PB_TMP/$name.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$name $pid" >> "$PB_TMP/pids"
  eval "PID_${name//-/_}=$pid"
}

pid_of() { awk -v n="$1" '$1==n {p=$2} END {print p}' "$PB_TMP/pids"; }

pb_cleanup() {
  local rc=$?
  [ -n "${PB_TMP:-}" ] && [ -f "$PB_TMP/pids" ] || return $rc
  local name pid
  while read -r name pid; do
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done < "$PB_TMP/pids"
  sleep 0.5
  while read -r name pid; do
    kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; } || true
  done < "$PB_TMP/pids"
  wait 2>/dev/null || true
  rm -f "$PB_TMP"/*/*.sock "$PB_TMP"/*/*.pid
  log "stopped everything we started; logs/configs/results kept in $PB_TMP"
  return $rc
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_http PORT [SECONDS]: until GET / answers 200.
wait_http() {
  local port=$1 t=${2:-10} i
  for ((i = 0; i < t * 10; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/" 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# wait_h2c PORT [SECONDS]: until GET / over h2c (prior knowledge) answers 200 over HTTP/2.
wait_h2c() {
  local port=$1 t=${2:-10} i
  for ((i = 0; i < t * 10; i++)); do
    [ "$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_version} %{http_code}' "http://127.0.0.1:$port/" 2>/dev/null)" = "2 200" ] && return 0
    sleep 0.1
  done
  return 1
}

# ------------------------------------------------------------ backends ----
# One nginx instance, 1 worker, three server blocks: blue :18081, green :18082, and blue again
# over h2c on :18083 (the `direct` target of the h2c mode); plus stub_status on :18084, whose
# "accepts" counter tells how many connections were opened to the backend during a run.
start_backends() {
  local d=$PB_TMP/backend; mkdir -p "$d"
  cat > "$d/nginx.conf" <<EOF
# backend: one nginx worker, two fixed-body servers ("blue"/"green")
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
  access_log off;
  default_type text/plain;
  keepalive_timeout 300s;             # outlive the proxies' idle upstream pools
  keepalive_requests 100000000;       # never close upstream keep-alive connections mid-run
  client_body_temp_path $d/tmp_body; proxy_temp_path $d/tmp_proxy;
  fastcgi_temp_path $d/tmp_fcgi; uwsgi_temp_path $d/tmp_uwsgi; scgi_temp_path $d/tmp_scgi;
  server { listen 127.0.0.1:$BLUE_PORT  backlog=4096; location / { return 200 "blue\n"; } }
  server { listen 127.0.0.1:$GREEN_PORT backlog=4096; location / { return 200 "green\n"; } }
  server { listen 127.0.0.1:$BLUE_H2C_PORT backlog=4096 http2; location / { return 200 "blue\n"; } }
  server { listen 127.0.0.1:$BACKEND_STATUS_PORT; location / { stub_status; } }
}
EOF
  port_free "$BLUE_PORT" && port_free "$GREEN_PORT" && port_free "$BLUE_H2C_PORT" &&
    port_free "$BACKEND_STATUS_PORT" || die "port $BLUE_PORT/$GREEN_PORT/$BLUE_H2C_PORT/$BACKEND_STATUS_PORT in use"
  start backend "$BACKEND_CPU" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
  wait_http "$BLUE_PORT" && wait_http "$GREEN_PORT" && wait_h2c "$BLUE_H2C_PORT" ||
    die "backend did not start (see $PB_TMP/backend.log)"
  log "backend nginx pid $(pid_of backend) on :$BLUE_PORT (blue) :$GREEN_PORT (green) :$BLUE_H2C_PORT (blue, h2c)"
}

# --------------------------------------------------------- nginx proxy ----
# write_nginx_proxy_conf BLUE_W GREEN_W : nginx has no weight=0, so a 0 weight
# is written as "down" (which also takes the server out of rotation).
write_nginx_proxy_conf() {
  local bw=$1 gw=$2 d=$PB_TMP/nginx
  local bs="weight=$bw" gs="weight=$gw"
  [ "$bw" -eq 0 ] && bs="down"; [ "$gw" -eq 0 ] && gs="down"
  mkdir -p "$d"
  cat > "$d/nginx.conf.new" <<EOF
# nginx L7 proxy: weighted split $bw/$gw blue/green, keep-alive both sides, 1 worker
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 100000000;       # default 1000 would force a client reconnect every 1000 reqs (HAProxy has no such limit)
  client_body_temp_path $d/tmp_body; proxy_temp_path $d/tmp_proxy;
  fastcgi_temp_path $d/tmp_fcgi; uwsgi_temp_path $d/tmp_uwsgi; scgi_temp_path $d/tmp_scgi;
  upstream pools {
    server 127.0.0.1:$BLUE_PORT  $bs;   # blue
    server 127.0.0.1:$GREEN_PORT $gs;   # green
    keepalive $NGINX_KEEPALIVE;                      # idle upstream connections kept per worker
    keepalive_requests 100000000;
    keepalive_timeout 60s;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT backlog=4096;
    listen 127.0.0.1:$NGINX_H2C_PORT backlog=4096 http2;   # h2c with prior knowledge (nginx 1.22)
    location / {
      proxy_pass http://pools;
      proxy_http_version 1.1;
      proxy_set_header Connection "";   # required for upstream keep-alive
    }
  }
}
EOF
  mv "$d/nginx.conf.new" "$d/nginx.conf"
}

start_nginx_proxy() {
  local d=$PB_TMP/nginx
  write_nginx_proxy_conf "$BLUE_W" "$GREEN_W"
  port_free "$NGINX_PORT" && port_free "$NGINX_H2C_PORT" || die "port $NGINX_PORT/$NGINX_H2C_PORT in use"
  start nginx "$PROXY_CPU" nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
  wait_http "$NGINX_PORT" && wait_h2c "$NGINX_H2C_PORT" || die "nginx proxy did not start (see $PB_TMP/nginx.log)"
  log "nginx proxy pid $(pid_of nginx) on :$NGINX_PORT (h2c :$NGINX_H2C_PORT)"
}

# nginx_set_weights BLUE_W GREEN_W : rewrite config + `nginx -s reload`
nginx_set_weights() {
  local d=$PB_TMP/nginx
  write_nginx_proxy_conf "$1" "$2"
  nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" -t -q || die "nginx config test failed"
  nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" -s reload
}

# ------------------------------------------------------- haproxy proxy ----
start_haproxy() {
  local d=$PB_TMP/haproxy; mkdir -p "$d"
  cat > "$d/haproxy.cfg" <<EOF
# HAProxy L7 proxy: weighted split $BLUE_W/$GREEN_W blue/green, keep-alive both sides, 1 thread
global
  nbthread 1
  maxconn 4096
  pidfile $d/haproxy.pid
  stats socket $d/admin.sock mode 600 level admin   # runtime API (set weight)

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client  60s
  timeout server  60s
  timeout http-keep-alive 60s

frontend fe
  bind 127.0.0.1:$HAPROXY_PORT
  bind 127.0.0.1:$HAPROXY_H2C_PORT proto h2   # h2c with prior knowledge
  default_backend pools

backend pools
  balance roundrobin
  http-reuse always                  # share idle upstream connections between clients
  server blue  127.0.0.1:$BLUE_PORT  weight $BLUE_W
  server green 127.0.0.1:$GREEN_PORT weight $GREEN_W
EOF
  port_free "$HAPROXY_PORT" && port_free "$HAPROXY_H2C_PORT" || die "port $HAPROXY_PORT/$HAPROXY_H2C_PORT in use"
  haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy config check failed"
  start haproxy "$PROXY_CPU" haproxy -db -f "$d/haproxy.cfg"
  wait_http "$HAPROXY_PORT" && wait_h2c "$HAPROXY_H2C_PORT" || die "haproxy did not start (see $PB_TMP/haproxy.log)"
  log "haproxy pid $(pid_of haproxy) on :$HAPROXY_PORT (h2c :$HAPROXY_H2C_PORT)"
}

haproxy_cli() { echo "$*" | socat -t 2 stdio "unix-connect:$PB_TMP/haproxy/admin.sock"; }

# haproxy_set_weights BLUE_W GREEN_W : runtime API, no reload, no reconnects.
haproxy_set_weights() {
  haproxy_cli "set weight pools/green $2; set weight pools/blue $1" | grep -v '^$' || true
}

# ------------------------------------------------------------- our proxy --
start_ours() {
  [ -n "$OURS_CMD" ] || return 0
  [ -n "$OURS_PORT" ] || die "OURS_CMD is set but OURS_PORT is not"
  port_free "$OURS_PORT" || die "port $OURS_PORT in use"
  [ "$OURS_H2C_PORT" = "$OURS_PORT" ] || port_free "$OURS_H2C_PORT" || die "port $OURS_H2C_PORT in use"
  mkdir -p "$PB_TMP/ours"
  export OURS_PORT OURS_H2C_PORT BLUE_W GREEN_W PB_TMP
  export BLUE_ADDR=127.0.0.1:$BLUE_PORT GREEN_ADDR=127.0.0.1:$GREEN_PORT
  start ours "$PROXY_CPU" bash -c "exec $OURS_CMD"
  wait_http "$OURS_PORT" 30 || die "our proxy did not answer 200 on :$OURS_PORT (see $PB_TMP/ours.log)"
  ! mode_on h2c || wait_h2c "$OURS_H2C_PORT" 5 || die "our proxy did not answer 200 over h2c (prior knowledge) on :$OURS_H2C_PORT (see $PB_TMP/ours.log)"
  log "our proxy pid $(pid_of ours) on :$OURS_PORT (h2c :$OURS_H2C_PORT)  ($OURS_CMD)"
}

ours_set_weights() {
  BLUE_W=$1 GREEN_W=$2 bash -c "$OURS_SWITCH_CMD"
}

# ------------------------------------------------------------ measuring ---
# All PIDs in the session led by $1 (start() gives every target its own
# session via setsid, so this is e.g. nginx master + worker).
tree_pids() { pgrep -s "$1" || true; }
# cpu_ticks PID : utime+stime over the whole tree (live processes only).
cpu_ticks() {
  local t=0 p f
  for p in $(tree_pids "$1"); do
    f=$(cat /proc/"$p"/stat 2>/dev/null) || continue
    f=${f##*) }                      # drop "pid (comm) "
    set -- $f                        # fields now start at #3 (state)
    t=$((t + ${12} + ${13}))         # utime=#14 stime=#15
  done
  echo $t
}
# mem_kb PID : "RSS_kB PSS_kB" summed over the tree (PSS = shared pages split fairly).
mem_kb() {
  local r=0 s=0 p v
  for p in $(tree_pids "$1"); do
    v=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null); r=$((r + ${v:-0}))
    v=$(awk '/^Pss:/ {print $2}' /proc/"$p"/smaps_rollup 2>/dev/null); s=$((s + ${v:-0}))
  done
  echo "$r $s"
}
# backend_accepts : connections the backend nginx has accepted so far (stub_status; each call
# adds its own connection, which the caller subtracts).
backend_accepts() {
  local v; v=$(curl -s "http://127.0.0.1:$BACKEND_STATUS_PORT/" | awk 'f {print $1; exit} /accepts/ {f = 1}')
  echo "${v:-0}"
}
# busy ticks of one cpu from /proc/stat: "busy total"
cpu_busy() { awk -v c="cpu$1" '$1==c {b=$2+$3+$4+$7+$8; t=b+$5+$6+$9; print b, t}' /proc/stat; }   # busy total(incl. steal)

# split_check PORT N : N sequential keep-alive GETs, prints "blue green other".
# split_check PORT N h2c : N GETs as streams of one h2c connection (nghttp -m: up to the server's
#   stream limit at once; curl 7.88 fails the second request on a reused prior-knowledge connection).
split_check() {
  if [ "${3:-}" = h2c ]; then
    nghttp -m "$2" "http://127.0.0.1:$1/"
  else
    curl -s "http://127.0.0.1:$1/?[1-$2]"
  fi | awk '
    $0=="blue" {b++} $0=="green" {g++} $0!="blue" && $0!="green" {o++}
    END {printf "%d %d %d\n", b, g, o}'
}
