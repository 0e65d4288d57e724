#!/usr/bin/env python3
"""latency_report.py DIR BURST — the report of bench/latency.sh, from DIR/latency-<target>-<round>.log
(h2load's per-request log: start time in microseconds since the epoch, status, latency in
microseconds). BURST is the number of connections, whose requests h2load sends together."""
import glob
import os
import re
import statistics
import sys


def pct(values, p):
    return values[min(len(values) - 1, int(p / 100 * len(values)))] / 1000


def median_interval(sorted_values, level=0.95):
    """The distribution-free interval for the median of `sorted_values`: (x_(k), x_(n-k+1)) with
    the largest k whose coverage, 1 - 2 P(Binomial(n, 1/2) < k), is still at least `level`; None
    when n is too small for any (n < 6 at 95 %)."""
    n = len(sorted_values)
    from math import comb
    best = None
    tail = 0.0
    for k in range(1, n // 2 + 1):
        tail += comb(n, k - 1) / 2 ** n   # P(Bin < k)
        if 1 - 2 * tail >= level:
            best = k
        else:
            break
    if best is None:
        return None
    return sorted_values[best - 1], sorted_values[n - best]


def main(directory, burst):
    runs = {}
    for path in glob.glob(os.path.join(directory, "latency-*-*.log")):
        m = re.match(r"latency-(.+)-(\d+)\.log$", os.path.basename(path))
        rows = [tuple(map(int, line.split()[:3])) for line in open(path) if len(line.split()) >= 3]
        runs.setdefault(m.group(1), {})[int(m.group(2))] = rows
    order = [t for t in ("direct", "nginx", "haproxy", "crossfade", "b") if t in runs]
    marks = (50, 90, 99, 99.9)
    medians = {}
    print("\n| target | round | requests | non-2xx | p50 ms | p90 ms | p99 ms | p99.9 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in order:
        per = {m: [] for m in marks}
        for r in sorted(runs[t]):
            rows = runs[t][r]
            lat = sorted(d for _, _, d in rows)
            bad = sum(1 for _, s, _ in rows if not 200 <= s < 300)
            if not lat:
                print(f"| {t} | {r} | 0 | {bad} | | | | |")
                continue
            for m in marks:
                per[m].append(pct(lat, m))
            print(f"| {t} | {r} | {len(lat)} | {bad} | " + " | ".join(f"{pct(lat, m):.3f}" for m in marks) + " |")
        medians[t] = {m: statistics.median(v) if v else None for m, v in per.items()}
    base = medians.get("direct", {}).get(99)
    added = {t: (medians[t][99] - base) if base is not None and medians[t][99] is not None else None
             for t in order}
    print("\nMedians over the rounds; added p99 = the target's p99 less direct's (the backend alone).\n")
    print("| target | p50 ms | p90 ms | p99 ms | p99.9 ms | added p99 ms | added p99 × nginx | × haproxy |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for t in order:
        md = medians[t]

        def ratio(peer):
            mine, theirs = added.get(t), added.get(peer)
            if t == "direct" or mine is None or not theirs or theirs <= 0:
                return "n/a"
            return f"{mine / theirs:.2f}"
        add = "n/a" if t == "direct" or added[t] is None else f"{added[t]:.3f}"
        print(f"| {t} | " + " | ".join("n/a" if md[m] is None else f"{md[m]:.3f}" for m in marks)
              + f" | {add} | {ratio('nginx')} | {ratio('haproxy')} |")
    # Paired by round: within a round the targets ran one after the other, so a round's p99 of one
    # proxy less another's cancels what the machine did that round more than the medians above do
    # (direct cancels too: the difference of two added p99s is the difference of the two p99s).
    print("\nPaired by round: crossfade's p99 less the peer's in the same round, in µs; the median"
          " difference with its distribution-free 95 % interval (order statistics of the rounds,"
          " binomial(n, 1/2)), and the rounds where crossfade's p99 was the higher.\n")
    print("| pair | rounds | median µs | 95 % interval µs | crossfade higher |")
    print("|---|---:|---:|---|---:|")
    for peer in ("nginx", "haproxy", "b"):
        if peer not in runs or "crossfade" not in runs:
            continue
        diffs = []
        for r in sorted(set(runs["crossfade"]) & set(runs[peer])):
            a = sorted(d for _, _, d in runs["crossfade"][r])
            b = sorted(d for _, _, d in runs[peer][r])
            if a and b:
                diffs.append((pct(a, 99) - pct(b, 99)) * 1000)
        diffs.sort()
        n = len(diffs)
        if n == 0:
            continue
        interval = median_interval(diffs)
        cell = "n/a (too few rounds)" if interval is None else f"{interval[0]:+.0f} to {interval[1]:+.0f}"
        higher = sum(1 for d in diffs if d > 0)
        print(f"| crossfade − {peer} | {n} | {statistics.median(diffs):+.0f} | {cell} | {higher} of {n} |")
    # Within a burst: the median time from the burst's first request to its k-th completion.
    print(f"\nWithin a burst of {burst} (µs from the burst's first request to its k-th completion, median over bursts of all rounds):\n")
    print("| target | bursts | " + " | ".join(f"k={k + 1}" for k in range(burst)) + " |")
    print("|---|---:|" + "---:|" * burst)
    for t in order:
        rows = sorted(row for rr in runs[t].values() for row in rr)
        bursts, current, first = [], [], None
        for start, _, d in rows:
            if first is None or start - first > 200:   # a new burst: 200 µs after the last one's first
                if current:
                    bursts.append(current)
                current, first = [], start
            current.append(start + d - first)
        if current:
            bursts.append(current)
        by_rank = [[] for _ in range(burst)]
        for b in bursts:
            for k, done in enumerate(sorted(b)[:burst]):
                by_rank[k].append(done)
        cells = [f"{statistics.median(v):.0f}" if v else "" for v in by_rank]
        print(f"| {t} | {len(bursts)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
