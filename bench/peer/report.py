#!/usr/bin/env python3
"""peerbench/report.py DIR — turn the raw files run.sh/switch.sh left in DIR into markdown.

Reads DIR/results.jsonl (one line per wrk run), DIR/h2load-*.txt, DIR/split.txt,
DIR/switch.jsonl, DIR/env.txt; any of them may be missing.
Medians are over the interleaved rounds; error counts are summed over rounds.
"""
import json
import os
import re
import sys
from statistics import median

d = sys.argv[1]
p = lambda name: os.path.join(d, name)
ORDER = ["direct", "nginx", "haproxy", "ours"]


def load_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def ms(us):
    return f"{us / 1000:.2f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


out = []
if os.path.exists(p("env.txt")):
    out += ["```", open(p("env.txt")).read().rstrip(), "```", ""]
SUMMARY_AT = len(out)        # the "ours vs the peers" summary goes here, once everything is read
by, rounds, h2, split, sw = {}, {}, [], {}, []

# ---------------------------------------------------------------- wrk table --
runs = load_jsonl(p("results.jsonl"))
if runs:
    for r in runs:
        w = r["wrk"]
        dur = w["duration_us"] / 1e6
        r["rps"] = w["requests"] / dur
        r["server_cpu"] = r["server_ticks"] / r["clk_tck"] / dur * 100      # % of one core
        r["backend_cpu"] = r["backend_ticks"] / r["clk_tck"] / dur * 100
        r["wrk_cpu"] = r["wrk_cpu_s"] / dur * 100
        busy = lambda k: 100 * r[k][0] / r[k][1] if r[k][1] else 0
        r["loadgen_busy"], r["proxy_busy"] = busy("cpu_loadgen"), busy("cpu_proxy")
        ours = r["server_cpu"] + r["wrk_cpu"] + (0 if r["same_server_backend"] else r["backend_cpu"])
        # CPU used by everything else on the machine (other tenants, kernel threads), % of one core
        r["other_cpu"] = max(0.0, r["cpu_all"][0] / r["clk_tck"] / dur * 100 - ours)
        r["per_core"] = r["rps"] / (r["server_cpu"] / 100) if r["server_cpu"] > 0 else 0
        by.setdefault(r["target"], []).append(r)
        rounds.setdefault(r["rep"], {})[r["target"]] = r
    targets = [t for t in ORDER if t in by] + [t for t in by if t not in ORDER]

    def paired(t, base, key):
        """median over rounds of (t / base) measured in the same round"""
        xs = [rd[t][key] / rd[base][key] for rd in rounds.values()
              if t in rd and base in rd and rd[base][key]]
        return f"{median(xs):.2f}" if xs else "-"

    out.append(f"### wrk -t1 -c{runs[0]['conns']}, {len(rounds)} interleaved rounds "
               "(medians; × = median of same-round ratios; errors summed)\n")
    out.append("| target | req/s | min–max req/s | × direct | × nginx | × haproxy | p50 ms | p99 ms | p99.9 ms "
               "| non-2xx/3xx | socket errs c/r/w/t | server CPU % | req/s per server core "
               "| per-core × nginx | per-core × haproxy | RSS MiB | PSS MiB |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in targets:
        xs = by[t]
        m = lambda k: median(x[k] for x in xs)
        w = lambda k: median(x["wrk"][k] for x in xs)
        s = lambda k: sum(x["wrk"][k] for x in xs)
        out.append(
            f"| {t} | {m('rps'):,.0f} | {min(x['rps'] for x in xs):,.0f}–{max(x['rps'] for x in xs):,.0f} "
            f"| {paired(t, 'direct', 'rps')} | {paired(t, 'nginx', 'rps')} | {paired(t, 'haproxy', 'rps')} "
            f"| {ms(w('p50_us'))} | {ms(w('p99_us'))} | {ms(w('p999_us'))} | {s('non2xx3xx')} "
            f"| {s('err_connect')}/{s('err_read')}/{s('err_write')}/{s('err_timeout')} "
            f"| {m('server_cpu'):.0f} | {m('per_core'):,.0f} | {paired(t, 'nginx', 'per_core')} "
            f"| {paired(t, 'haproxy', 'per_core')} "
            f"| {max(x['rss_kb'] for x in xs) / 1024:.1f} | {max(x['pss_kb'] for x in xs) / 1024:.1f} |")
    out.append("")
    out.append("server = the process(es) behind the port (backend nginx for `direct`, else the proxy); "
               "CPU % = utime+stime over the run, 100 = one core; RSS/PSS = max after a run, "
               "summed over the target's processes. `other` = CPU used by processes that are not part "
               "of the benchmark (other tenants): when it is high, the round was disturbed.\n")
    out.append("| target | round | req/s | p50 ms | p99 ms | server CPU % | backend CPU % | wrk CPU % "
               "| loadgen core busy % | proxy core busy % | other CPU % |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(runs, key=lambda r: (r["rep"], targets.index(r["target"]))):
        out.append(f"| {r['target']} | {r['rep']} | {r['rps']:,.0f} | {ms(r['wrk']['p50_us'])} "
                   f"| {ms(r['wrk']['p99_us'])} | {r['server_cpu']:.0f} | {r['backend_cpu']:.0f} "
                   f"| {r['wrk_cpu']:.0f} | {r['loadgen_busy']:.0f} | {r['proxy_busy']:.0f} "
                   f"| {r['other_cpu']:.0f} |")
    out.append("")

# ------------------------------------------------------------- h2load table --
def pct(sorted_xs, q):
    return sorted_xs[min(len(sorted_xs) - 1, int(q / 100 * len(sorted_xs)))]


h2 = []
for t in ORDER:
    f = p(f"h2load-{t}.txt")
    if not os.path.exists(f):
        continue
    txt = open(f).read()
    m_rps = re.search(r"finished in .*?, ([\d.]+) req/s", txt)
    m_req = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", txt)
    lat, bad = [], 0
    if os.path.exists(p(f"h2load-{t}.log")):            # start_us \t status \t duration_us
        for line in open(p(f"h2load-{t}.log")):
            f3 = line.split()
            if len(f3) == 3:
                lat.append(int(f3[2]))
                bad += not f3[1].startswith("2")
    lat.sort()
    h2.append((t, m_rps and float(m_rps.group(1)), m_req and m_req.groups(), bad, lat))
if h2:
    out.append("### h2load --h1 at a fixed request rate (see layout line): latency below saturation\n")
    out.append("| target | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | failed/errored/timeout | non-2xx |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t, rps, req, bad, lat in h2:
        if lat:
            q = " | ".join(ms(pct(lat, x)) for x in (50, 90, 99, 99.9)) + f" | {ms(lat[-1])}"
        else:
            q = "? | ? | ? | ? | ?"
        out.append(f"| {t} | {rps or 0:,.0f} | {q} | {'/'.join(req) if req else '?'} | {bad} |")
    out.append("")

# -------------------------------------------------------------- split check --
if os.path.exists(p("split.txt")):
    out.append("### Split check (1000 sequential keep-alive GETs, expected 900 blue / 100 green)\n")
    out.append("| target | blue | green | other |")
    out.append("|---|---:|---:|---:|")
    for line in open(p("split.txt")):
        f = line.split()
        if len(f) == 4:
            split[f[0]] = f[1:]
            out.append(f"| {f[0]} | {f[1]} | {f[2]} | {f[3]} |")
    out.append("")

# ------------------------------------------------------------- switch check --
sw = load_jsonl(p("switch.jsonl"))
switch_failed = {}
if sw:
    out.append("### Switch check (weights flipped under full wrk load)\n")
    out.append("| target | flips (time -> blue/green) | requests | non-2xx/3xx | socket errs (c/r/w/t) | "
               "after: blue/green/other (200 GETs) | failed requests? |")
    out.append("|---|---|---:|---:|---:|---:|---|")
    for s in sw:
        w = s["wrk"] or {}
        errs = sum(w.get(k, 0) for k in ("err_connect", "err_read", "err_write", "err_timeout", "non2xx3xx"))
        b, g, o = s["after_blue_green_other"].split()
        if s["target"].endswith("noop-reload"):   # control: weights must still be 90/10
            ok_after, note = o == "0" and b != "0" and g != "0", "still 90/10"
        else:
            ok_after, note = b == "0" and o == "0", "switch NOT effective"
        verdict = ("NO" if errs == 0 else f"YES ({errs})") + ("" if ok_after else f", {note}")
        switch_failed[s["target"]] = verdict
        if s.get("nginx_errlog_new_lines"):
            verdict += f"; {s['nginx_errlog_new_lines']} new warn+ lines in nginx error.log"
        out.append(f"| {s['target']} | {s['events'].rstrip(';').replace(';', '; ')} | {w.get('requests', '?'):,} "
                   f"| {w.get('non2xx3xx', '?')} | {w.get('err_connect')}/{w.get('err_read')}/{w.get('err_write')}/{w.get('err_timeout')} "
                   f"| {b}/{g}/{o} | {verdict} |")
    out.append("")



# ------------------------------------------- summary: ours vs direct / nginx / haproxy --
def same_round(t, base, key):
    """median over rounds of t/base measured in the same round (None if not measurable)"""
    xs = [rd[t][key] / rd[base][key] for rd in rounds.values()
          if t in rd and base in rd and rd[base][key]]
    return median(xs) if xs else None


def fmt_ratio(x):
    return f"{x:.2f}" if x else "-"


def summary():
    if "ours" not in by and not any(t == "ours" for t, *_ in h2):
        return ["### Ours vs the peers\n", "`ours` was not run (OURS_CMD unset): no ratios.\n"]
    peers = ["direct", "nginx", "haproxy"]
    rows = []
    if "ours" in by:
        for label, key, fmt in (("throughput, req/s (wrk at saturation)", "rps", "{:,.0f}"),
                                ("efficiency, req/s per server core", "per_core", "{:,.0f}")):
            mine = median(x[key] for x in by["ours"])
            rows.append([label, fmt.format(mine)] + [fmt_ratio(same_round("ours", b, key)) for b in peers])
        rss = {t: max(x["rss_kb"] for x in xs) / 1024 for t, xs in by.items()}
        rows.append(["memory, RSS MiB (max after a run)", f"{rss['ours']:.1f}"]
                    + [fmt_ratio(rss["ours"] / rss[b]) if rss.get(b) else "-" for b in peers])
    lat = {t: l for t, _, _, _, l in h2 if l}
    if "ours" in lat:
        for q in (50, 99, 99.9):
            mine = pct(lat["ours"], q)
            rows.append([f"latency p{q:g} at a fixed rate, ms (h2load)", ms(mine)]
                        + [fmt_ratio(mine / pct(lat[b], q)) if b in lat and pct(lat[b], q) else "-"
                           for b in peers])
    out = ["### Ours vs the peers (read this first)\n",
           "Each ratio is ours ÷ that target: for wrk figures the median of the ratios measured in the same "
           "round, for h2load the ratio of the single pass. Throughput and efficiency: higher is better for "
           "ours; latency and memory: lower is better. `direct` is the backend with no proxy in front: "
           "ours × direct is the share of the backend's own throughput that survives the extra hop, and the "
           "efficiency ratio compares one proxy core with one core of the backend itself.\n",
           "| measure | ours | × direct | × nginx | × haproxy |", "|---|---:|---:|---:|---:|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    if "ours" in split:
        b, g, o = split["ours"]
        out.append(f"- split check: ours sent {b} blue / {g} green / {o} other of 1000 (expected 900/100/0)")
    if "ours" in switch_failed:
        out.append(f"- switch under load: failed requests for ours? {switch_failed['ours']}"
                   + "".join(f"; {t}: {v}" for t, v in switch_failed.items() if t != "ours"))
    out.append("")
    return out


out[SUMMARY_AT:SUMMARY_AT] = summary()
print("\n".join(out))
