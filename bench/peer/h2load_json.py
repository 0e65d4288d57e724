#!/usr/bin/env python3
"""peerbench/h2load_json.py TXT LOG DURATION_S — one h2load run as the JSON line report.lua writes
for wrk, so that run.sh and report.py treat both load generators alike.

TXT is h2load's stdout, LOG its --log-file (one line per request of the measured period, after
--warm-up-time: start_us, status, duration_us), DURATION_S its -D. Fields (wrk's names):
  requests     requests done in the measured period ("requests: ... N done")
  duration_us  the measured period (-D), in microseconds: requests / duration = h2load's req/s
  err_connect  0: h2load has no separate connect-error count (a client that cannot connect makes
               its requests "errored")
  err_read     requests "errored" (stream or connection error before a response)
  err_write    0
  err_timeout  requests that timed out
  non2xx3xx    responses with status 4xx or 5xx (wrk's "Non-2xx or 3xx" counts status > 399)
  mean_us, p50_us, p90_us, p99_us, p999_us, max_us: per-request latency from LOG, microseconds
               (stream opened -> response complete; the TCP connect is not included)
Exits 1 with a message when TXT has no result line.
"""
import json
import re
import sys

txt_path, log_path, duration_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
txt = open(txt_path).read()
m_req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", txt)
m_status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", txt)
if not m_req or not m_status:
    sys.exit(f"h2load_json: no 'requests:'/'status codes:' line in {txt_path}")
done, errored, timeout = int(m_req.group(3)), int(m_req.group(6)), int(m_req.group(7))
lat = []
try:
    for line in open(log_path):
        f = line.split()
        if len(f) == 3:
            lat.append(int(f[2]))
except FileNotFoundError:
    pass
lat.sort()


def pct(q):
    return lat[min(len(lat) - 1, int(q / 100 * len(lat)))] if lat else 0


print(json.dumps({
    "requests": done,
    "duration_us": int(duration_s * 1e6),
    "err_connect": 0,
    "err_read": errored,
    "err_write": 0,
    "err_timeout": timeout,
    "non2xx3xx": int(m_status.group(3)) + int(m_status.group(4)),
    "mean_us": round(sum(lat) / len(lat), 1) if lat else 0,
    "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "p999_us": pct(99.9),
    "max_us": lat[-1] if lat else 0,
}))
