#!/usr/bin/env bash
# bench/config_check.sh — how long a config with many routes takes to check, as `crossfade check`,
# a start and every SIGHUP reload of `crossfade proxy` validate it, next to `haproxy -c` and
# `nginx -t` on the same routing table (one host per route, all on path prefix `/`: an ingress of
# N sites). Prints the median of REPS runs per size, the growth per step of N (2.0 per doubling
# is linear) and crossfade's time as a ratio of each peer's.
#
#   bench/config_check.sh                  # N = 1000 5000 20000, 3 runs each
#   SIZES="2500 5000 10000" REPS=5 bench/config_check.sh
#   CROSSFADE_BIN=target/debug/crossfade SKIP_BUILD=1 bench/config_check.sh
#
# A script, never a test: it measures time. The peers come from bench/peer/setup.sh (skipped
# when missing). Until session 39 the shadowed-route check compared every route with every
# earlier one: 9.0 s for 5,000 routes on one prefix in a debug build (user39's D5).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-"1000 5000 20000"}
REPS=${REPS:-3}
BIN=${CROSSFADE_BIN:-target/release/crossfade}
if [ "${SKIP_BUILD:-0}" != 1 ] && [ -z "${CROSSFADE_BIN:-}" ]; then
  cargo build --release --locked --bin crossfade >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work" "$BIN" "$REPS" $SIZES <<'EOF'
import os, shutil, statistics, subprocess, sys, time

work, binary, reps, sizes = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(n) for n in sys.argv[4:]]

def write(n):
    """The same table three ways: route i serves host h<i>.example on / from one backend."""
    cf = os.path.join(work, f"crossfade-{n}.yaml")
    with open(cf, "w") as f:
        f.write("listen: 127.0.0.1:18080\nadmin: 127.0.0.1:18081\nroutes:\n")
        for i in range(n):
            f.write(f"  - name: r{i}\n    hosts: [h{i}.example]\n    path_prefix: /\n"
                    f"    blue: {{ endpoints: [127.0.0.1:{9000 + i % 1000}], weight: 100 }}\n")
    hp = os.path.join(work, f"haproxy-{n}.cfg")
    with open(hp, "w") as f:
        f.write("defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
                "frontend web\n  bind 127.0.0.1:18080\n")
        for i in range(n):
            f.write(f"  use_backend b{i} if {{ hdr(host) -i h{i}.example }}\n")
        for i in range(n):
            f.write(f"backend b{i}\n  server s 127.0.0.1:{9000 + i % 1000}\n")
    ng = os.path.join(work, f"nginx-{n}.conf")
    with open(ng, "w") as f:
        f.write(f"pid {work}/nginx.pid;\nerror_log {work}/nginx.err;\nevents {{}}\nhttp {{\n"
                f"  access_log off;\n  server_names_hash_max_size 262144;\n  server_names_hash_bucket_size 128;\n")
        for i in range(n):
            f.write(f"  server {{ listen 127.0.0.1:18080; server_name h{i}.example;"
                    f" location / {{ proxy_pass http://127.0.0.1:{9000 + i % 1000}; }} }}\n")
        f.write("}\n")
    return cf, hp, ng

def median_s(cmd):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{cmd[0]} failed: {done.stderr.decode()[-500:]}")
    return statistics.median(times)

peers = {"haproxy": shutil.which("haproxy"), "nginx": shutil.which("nginx")}
rows, last = [], None
for n in sizes:
    cf, hp, ng = write(n)
    row = {"n": n, "crossfade": median_s([binary, "check", cf])}
    if peers["haproxy"]:
        row["haproxy"] = median_s([peers["haproxy"], "-c", "-q", "-f", hp])
    if peers["nginx"]:
        row["nginx"] = median_s([peers["nginx"], "-t", "-q", "-c", ng])
    row["growth"] = row["crossfade"] / last["crossfade"] if last else None
    row["n_growth"] = n / last["n"] if last else None
    rows.append(row)
    last = row

print(f"config check, one host per route on /; median of {reps} runs; {binary}")
print(f"{'routes':>7} {'crossfade s':>12} {'growth (N x)':>14} {'haproxy -c s':>13} {'nginx -t s':>11} {'x haproxy':>10} {'x nginx':>8}")
for r in rows:
    growth = f"{r['growth']:.2f} ({r['n_growth']:.1f}x)" if r["growth"] else ""
    hp = f"{r['haproxy']:.3f}" if "haproxy" in r else "-"
    ng = f"{r['nginx']:.3f}" if "nginx" in r else "-"
    xh = f"{r['crossfade'] / r['haproxy']:.2f}" if "haproxy" in r else "-"
    xn = f"{r['crossfade'] / r['nginx']:.2f}" if "nginx" in r else "-"
    print(f"{r['n']:>7} {r['crossfade']:>12.3f} {growth:>14} {hp:>13} {ng:>11} {xh:>10} {xn:>8}")
EOF
