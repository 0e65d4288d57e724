#!/usr/bin/env python3
"""swaps_report.py — the figures of swaps.sh (case C15).

  swaps_report.py one NAME BASE CHANGES PID0 PID1 INODE0 INODE1 GEN0 GEN1
      one JSON line for one target, from BASE.h2load.log (h2load's per-request log: start time in
      microseconds since the epoch, status, latency in microseconds), BASE.windows (swaps.sh's
      windows: `quiet|changes ROUND START_NS END_NS`), BASE.h2load.txt and BASE.newconns.json.
  swaps_report.py md SWAPS_JSONL
      the markdown section of the report.

A window's p99 is over the keep-alive requests that started in it; each round's ratio is its
changes window's p99 over the quiet window just before it."""
import json
import os
import re
import sys


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100 * len(values) + 0.5)) - 1))
    return values[k]


def one(name, base, changes, pid0, pid1, ino0, ino1, gen0, gen1):
    windows = []
    with open(base + ".windows") as f:
        for line in f:
            kind, rnd, t0, t1 = line.split()
            windows.append((kind, int(rnd), int(t0) // 1000, int(t1) // 1000))
    lat = {w: [] for w in range(len(windows))}
    non2xx = 0
    with open(base + ".h2load.log") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            start, status, dur = int(parts[0]), int(parts[1]), int(parts[2])
            if not 200 <= status < 300:
                non2xx += 1
            for i, (_, _, t0, t1) in enumerate(windows):
                if t0 <= start < t1:
                    lat[i].append(dur / 1000)
                    break
    rounds = []
    for i, (kind, rnd, _, _) in enumerate(windows):
        if kind != "changes":
            continue
        quiet = next(j for j, w in enumerate(windows) if w[0] == "quiet" and w[1] == rnd)
        q, c = percentile(lat[quiet], 99), percentile(lat[i], 99)
        rounds.append(dict(round=rnd, quiet_p99_ms=q, changes_p99_ms=c,
                           quiet_n=len(lat[quiet]), changes_n=len(lat[i]),
                           ratio=(c / q) if q and c else None))
    all_quiet = [x for i, w in enumerate(windows) if w[0] == "quiet" for x in lat[i]]
    all_changes = [x for i, w in enumerate(windows) if w[0] == "changes" for x in lat[i]]
    text = open(base + ".h2load.txt").read()
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    h2 = dict(zip(["total", "started", "done", "succeeded", "failed", "errored", "timeout"],
                  map(int, m.groups()))) if m else None
    try:
        newconns = json.load(open(base + ".newconns.json"))
    except (OSError, ValueError):
        newconns = None
    ratios = sorted(r["ratio"] for r in rounds if r["ratio"] is not None)
    out = dict(
        target=name, changes=int(changes), rounds=rounds,
        median_ratio=ratios[len(ratios) // 2] if ratios else None,
        quiet_p50_ms=percentile(all_quiet, 50), changes_p50_ms=percentile(all_changes, 50),
        quiet_p99_ms=percentile(all_quiet, 99), changes_p99_ms=percentile(all_changes, 99),
        keepalive=h2, keepalive_non2xx=non2xx, newconns=newconns,
        same_pid=pid0 == pid1, same_listener=ino0 == ino1 and ino0 != "null",
        generation_rise=(int(gen1) - int(gen0)) if gen0 != "null" and gen1 != "null" else None,
    )
    print(json.dumps(out))


def fmt(x, d=2):
    return "n/a" if x is None else f"{x:.{d}f}"


def md(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        return
    print("### Live weight changes (case C15): latency and losses during bursts of changes\n")
    env = os.environ.get
    conns, rps, new = int(env("SWAPS_CONNS", 32)), int(env("SWAPS_RPS", 16)), env("SWAPS_NEW", 50)
    print(f"Each target in turn, under {conns * rps} req/s over {conns} keep-alive connections "
          f"(h2load --h1 --rps) plus {new} new connections per second (`Connection: close`): "
          f"{env('SWAPS_QUIET', 10)} s quiet windows and bursts of {env('SWAPS_CHANGES', 100)} "
          f"weight changes {env('SWAPS_GAP_MS', 100)} ms apart to random weights, alternately, "
          f"{env('SWAPS_ROUNDS', 3)} rounds "
          "(HAProxy: runtime API `set weight`; ours: `PUT /routes/<route>/weights`). "
          "p99 ratio = the burst's p99 over the quiet window's just before it, per round "
          "(the case: within 10 %, i.e. ≤ 1.10); failures = keep-alive requests failed or "
          "not 2xx + new connections refused, reset, unanswered or not 2xx (the case: 0).\n")
    print("| target | changes | p99 quiet ms | p99 during changes ms | p99 ratio per round | "
          "median ratio | failures | same PID and listening socket | generation rise |")
    print("|---|---:|---:|---:|---|---:|---:|---|---:|")
    for r in rows:
        per = ", ".join(fmt(x["ratio"]) for x in r["rounds"])
        ka = r["keepalive"] or {}
        nc = r["newconns"] or {}
        failures = (ka.get("failed", 0) + ka.get("errored", 0) + ka.get("timeout", 0)
                    + r["keepalive_non2xx"] + sum(nc.get(k, 0) for k in
                                                  ("refused", "reset", "timeout",
                                                   "incomplete", "status")))
        same = "yes" if r["same_pid"] and r["same_listener"] else "NO"
        gen = "n/a" if r["generation_rise"] is None else str(r["generation_rise"])
        print(f"| {r['target']} | {r['changes']} | {fmt(r['quiet_p99_ms'])} | "
              f"{fmt(r['changes_p99_ms'])} | {per} | {fmt(r['median_ratio'])} | {failures} | "
              f"{same} | {gen} |")
    print()
    for r in rows:
        ka = r["keepalive"] or {}
        print(f"- {r['target']}: keep-alive requests {ka.get('done', 'n/a')} done, "
              f"{ka.get('succeeded', 'n/a')} succeeded; new connections {json.dumps(r['newconns'])}")
    print()


if __name__ == "__main__":
    if sys.argv[1] == "one":
        one(*sys.argv[2:11])
    else:
        md(sys.argv[2])
