#!/usr/bin/env python3
"""peerbench/report.py DIR — turn the raw files run.sh/switch.sh left in DIR into markdown.

Reads DIR/results.jsonl (one line per measured run at saturation: wrk, or h2load for h2c; each
with its client mode), DIR/h2load-*.txt (the fixed-rate pass), DIR/split.txt, DIR/switch.jsonl,
DIR/idle.json, DIR/env.txt; any of them may be missing.
Medians are over the interleaved rounds of one mode; error counts are summed over rounds.
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

# ------------------------------------------------------- saturation tables --
# One line per measured run: wrk (modes ka, close) or h2load (h2c, converted by h2load_json.py into
# wrk's field names). Lines without "mode" come from older harness versions: HTTP/1.1 keep-alive.
MODES = ["ka", "close", "h2c"]
MODE_LABEL = {"ka": "HTTP/1.1 keep-alive",
              "close": "HTTP/1.1, new connection per request",
              "h2c": "h2c (HTTP/2 prior knowledge)"}
ERR_KEYS = ("err_connect", "err_read", "err_write", "err_timeout", "non2xx3xx")
runs = load_jsonl(p("results.jsonl"))
modes = []
if runs:
    for r in runs:
        r.setdefault("mode", "ka")
        w = r["wrk"]
        dur = w["duration_us"] / 1e6
        win = r.get("cpu_window_s") or dur        # wall time the CPU counters cover
        r["rps"] = w["requests"] / dur
        r["server_cpu"] = r["server_ticks"] / r["clk_tck"] / win * 100      # % of one core
        r["backend_cpu"] = r["backend_ticks"] / r["clk_tck"] / win * 100
        r["wrk_cpu"] = r["wrk_cpu_s"] / win * 100
        busy = lambda k: 100 * r[k][0] / r[k][1] if r[k][1] else 0
        r["loadgen_busy"], r["proxy_busy"] = busy("cpu_loadgen"), busy("cpu_proxy")
        ours = r["server_cpu"] + r["wrk_cpu"] + (0 if r["same_server_backend"] else r["backend_cpu"])
        # CPU used by everything else on the machine (other tenants, kernel threads), % of one core
        r["other_cpu"] = max(0.0, r["cpu_all"][0] / r["clk_tck"] / win * 100 - ours)
        r["per_core"] = r["rps"] / (r["server_cpu"] / 100) if r["server_cpu"] > 0 else 0
        for k in ("p50_us", "p99_us", "p999_us"):
            r[k] = w[k]
        r["errors"] = sum(w.get(k, 0) for k in ERR_KEYS)
        # connections opened to the backend per 1000 requests (None from older harness versions)
        r["backend_per_k"] = (r["backend_conns"] / w["requests"] * 1000
                              if "backend_conns" in r and w["requests"] else None)
        by.setdefault((r["mode"], r["target"]), []).append(r)
        rounds.setdefault((r["mode"], r["rep"]), {})[r["target"]] = r
    modes = [m for m in MODES if any(k[0] == m for k in by)] + \
        sorted({k[0] for k in by} - set(MODES))
    names = {k[1] for k in by}
    targets = [t for t in ORDER if t in names] + sorted(names - set(ORDER))

    def same_round(mode, t, base, key):
        """median over rounds of t/base measured in the same round of the same mode (None if none)"""
        xs = [rd[t][key] / rd[base][key] for (m, _), rd in rounds.items()
              if m == mode and t in rd and base in rd and rd[base][key]]
        return median(xs) if xs else None

    def paired(mode, t, base, key):
        x = same_round(mode, t, base, key)
        return f"{x:.2f}" if x else "-"

    def per_k(xs):
        """median over rounds of backend connections opened per 1000 requests"""
        v = [x["backend_per_k"] for x in xs if x["backend_per_k"] is not None]
        return f"{median(v):.1f}" if v else "-"

    for mode in modes:
        mts = [t for t in targets if (mode, t) in by]
        n_rounds = len({rep for (m, rep) in rounds if m == mode})
        client = by[(mode, mts[0])][0].get("client") or f"wrk -t1 -c{by[(mode, mts[0])][0]['conns']}"
        out.append(f"### {MODE_LABEL.get(mode, mode)}: `{client}`, {n_rounds} interleaved rounds "
                   "(medians; × = median of same-round ratios; errors summed)\n")
        tw = mode == "close"
        out.append("| target | req/s | min–max req/s | × direct | × nginx | × haproxy | p50 ms | p99 ms | p99.9 ms "
                   "| non-2xx/3xx | socket errs c/r/w/t | server CPU % | req/s per server core "
                   "| per-core × nginx | per-core × haproxy | RSS MiB | PSS MiB | backend conns per 1k req |"
                   + (" TIME-WAIT after |" if tw else ""))
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                   + ("---:|" if tw else ""))
        for t in mts:
            xs = by[(mode, t)]
            m = lambda k: median(x[k] for x in xs)
            s = lambda k: sum(x["wrk"][k] for x in xs)
            out.append(
                f"| {t} | {m('rps'):,.0f} | {min(x['rps'] for x in xs):,.0f}–{max(x['rps'] for x in xs):,.0f} "
                f"| {paired(mode, t, 'direct', 'rps')} | {paired(mode, t, 'nginx', 'rps')} "
                f"| {paired(mode, t, 'haproxy', 'rps')} "
                f"| {ms(m('p50_us'))} | {ms(m('p99_us'))} | {ms(m('p999_us'))} | {s('non2xx3xx')} "
                f"| {s('err_connect')}/{s('err_read')}/{s('err_write')}/{s('err_timeout')} "
                f"| {m('server_cpu'):.0f} | {m('per_core'):,.0f} | {paired(mode, t, 'nginx', 'per_core')} "
                f"| {paired(mode, t, 'haproxy', 'per_core')} "
                f"| {max(x['rss_kb'] for x in xs) / 1024:.1f} | {max(x['pss_kb'] for x in xs) / 1024:.1f} "
                f"| {per_k(xs)} |"
                + (f" {max(x.get('time_wait', 0) for x in xs):,} |" if tw else ""))
        out.append("")
        if mode == "close":
            out.append("Each request opens and closes its own TCP connection (the server closes after the "
                       "response, so the TIME-WAIT sockets are mostly on its side; wrk's latency starts when "
                       "the request is written, after the connect). TIME-WAIT after = sockets in TIME-WAIT "
                       "on the whole machine right after a run, the most of any round (they last 60 s; other tenants' count too). "
                       "Socket errors here would be the loopback running out of ports or accept backlog: "
                       "they must be 0 for the round to count.\n")
        if mode == "h2c":
            out.append("Clients speak h2c with prior knowledge (RFC 9113 §3.3); every proxy forwards over "
                       "HTTP/1.1 keep-alive to the backends. `direct` is the backend nginx's own h2c port. "
                       "p50/p99/p99.9 come from h2load's per-request log (stream opened → response "
                       "complete); socket errors: `r` = h2load's errored requests, `t` = its timeouts.\n")

    out.append("backend conns per 1k req = connections the backend nginx accepted during the run (its "
               "stub_status), per 1000 requests: for a proxy, the upstream connections it opened (0 once its "
               "keep-alive pool is warm; more means it closes upstream connections), for `direct` the "
               "client's own.\n")
    out.append("server = the process(es) behind the port (backend nginx for `direct`, else the proxy); "
               "CPU % = utime+stime over the run, 100 = one core; RSS/PSS = max after a run, "
               "summed over the target's processes. p50/p99/p99.9 are at saturation (closed loop), so "
               "mostly queueing: see the fixed-rate table for latency below saturation. `other` = CPU "
               "used by processes that are not part of the benchmark (other tenants): when it is high, "
               "the round was disturbed.\n")
    out.append("| mode | target | round | req/s | p50 ms | p99 ms | server CPU % | backend CPU % | load gen CPU % "
               "| loadgen core busy % | proxy core busy % | other CPU % |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(runs, key=lambda r: (r["rep"], modes.index(r["mode"]), targets.index(r["target"]))):
        out.append(f"| {r['mode']} | {r['target']} | {r['rep']} | {r['rps']:,.0f} | {ms(r['p50_us'])} "
                   f"| {ms(r['p99_us'])} | {r['server_cpu']:.0f} | {r['backend_cpu']:.0f} "
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
    out.append("### Split check (1000 sequential GETs on one keep-alive connection, expected 900 blue / "
               "100 green; `-h2c` rows: 1000 streams on one h2c connection)\n")
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



# -------------------------------------------------------------- idle memory --
# idle.json: written by OURS_IDLE_CMD (bench/idle_rss.sh runs bench/idle.sh): ours' RSS holding N
# idle keep-alive client connections, and the figure at the requested N (scaled when the open-file
# limit allowed fewer).
idle = None
if os.path.exists(p("idle.json")):
    idle = json.load(open(p("idle.json")))
    out.append(f"### Idle memory: ours with {idle.get('requested', 0):,} idle keep-alive client connections\n")
    if idle.get("ok"):
        out.append(f"- measured at {idle['measured']:,} connections (open-file hard limit "
                   f"{idle.get('hard_limit', '?')}): RSS {idle['rss_before_mib']:.0f} MiB before, "
                   f"{idle['rss_with_mib']:.0f} MiB with them, {idle['per_conn_bytes']:,} bytes per connection")
        out.append(f"- at {idle['requested']:,}: {idle['rss_at_requested_mib']:.0f} MiB"
                   + (f" (scaled from {idle['measured']:,}: before + per connection × {idle['requested']:,})"
                      if idle.get("scaled") else "")
                   + f"; target ≤ {idle.get('target_mib', 64)} MiB: "
                   + ("met" if idle["rss_at_requested_mib"] <= idle.get("target_mib", 64) else "NOT met"))
    else:
        out.append(f"- failed: {idle.get('error', '?')}")
    if idle.get("raw"):
        out += ["", "```", idle["raw"].rstrip(), "```"]
    out.append("")


# ------------------------------------------- summary: ours vs direct / nginx / haproxy --
def fmt_ratio(x):
    return f"{x:.2f}" if x else "-"


def summary():
    ran_ours = any(t == "ours" for _, t in by) or any(t == "ours" for t, *_ in h2)
    if not ran_ours:
        return ["### Ours vs the peers\n", "`ours` was not run (OURS_CMD unset): no ratios.\n"]
    peers = ["direct", "nginx", "haproxy"]
    rows = []
    for mode in modes:
        if (mode, "ours") not in by:
            continue
        label = MODE_LABEL.get(mode, mode)
        mine = by[(mode, "ours")]
        for measure, key, fmt in (("throughput, req/s", "rps", "{:,.0f}"),
                                  ("efficiency, req/s per server core", "per_core", "{:,.0f}"),
                                  ("latency p50 at saturation, ms", "p50_us", None),
                                  ("latency p99 at saturation, ms", "p99_us", None),
                                  ("latency p99.9 at saturation, ms", "p999_us", None)):
            v = median(x[key] for x in mine)
            rows.append([label, measure, fmt.format(v) if fmt else ms(v)]
                        + [fmt_ratio(same_round(mode, "ours", b, key)) for b in peers])
    lat = {t: l for t, _, _, _, l in h2 if l}
    if "ours" in lat:
        for q in (50, 99, 99.9):
            mine = pct(lat["ours"], q)
            rows.append([MODE_LABEL["ka"], f"latency p{q:g} at a fixed rate, ms (h2load --h1)", ms(mine)]
                        + [fmt_ratio(mine / pct(lat[b], q)) if b in lat and pct(lat[b], q) else "-"
                           for b in peers])
    if any(t == "ours" for _, t in by):
        rss = {}
        for (_, t), xs in by.items():
            rss[t] = max(rss.get(t, 0), max(x["rss_kb"] for x in xs) / 1024)
        rows.append(["all", "memory, RSS MiB (max after a run)", f"{rss['ours']:.1f}"]
                    + [fmt_ratio(rss["ours"] / rss[b]) if rss.get(b) else "-" for b in peers])
    if idle and idle.get("ok"):
        rows.append([MODE_LABEL["ka"] + ", idle",
                     f"memory, RSS MiB with {idle['requested']:,} idle connections "
                     f"(target ≤ {idle.get('target_mib', 64)})",
                     f"{idle['rss_at_requested_mib']:.0f}" + (" (scaled)" if idle.get("scaled") else ""),
                     "n/a", "n/a", "n/a"])
    out = ["### Ours vs the peers (read this first)\n",
           "Each ratio is ours ÷ that target: for the saturation figures the median of the ratios measured "
           "in the same round of the same mode, for the fixed-rate latency the ratio of the single pass. "
           "Throughput and efficiency: higher is better for ours; latency and memory: lower is better. "
           "`direct` is the backend with no proxy in front: ours × direct is the share of the backend's own "
           "throughput that survives the extra hop, and the efficiency ratio compares one proxy core with "
           "one core of the backend itself. Latency at saturation is mostly queueing (closed loop).\n",
           "| mode | measure | ours | × direct | × nginx | × haproxy |", "|---|---|---:|---:|---:|---:|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out.append("")
    for mode in modes:
        errs = {t: sum(x["errors"] for x in by[(mode, t)]) for t in ORDER if (mode, t) in by}
        conns = {t: per_k(by[(mode, t)]) for t in ORDER if (mode, t) in by}
        out.append(f"- {MODE_LABEL.get(mode, mode)}: failed requests (socket errors + non-2xx/3xx, all "
                   "rounds): " + ", ".join(f"{t} {n:,}" for t, n in errs.items())
                   + "; backend connections opened per 1000 requests: "
                   + ", ".join(f"{t} {v}" for t, v in conns.items()))
    if idle and idle.get("ok"):
        out.append(f"- idle: ours held {idle['measured']:,} idle keep-alive connections in "
                   f"{idle['rss_with_mib']:.0f} MiB RSS ({idle['per_conn_bytes']:,} bytes each)"
                   + (f"; {idle['rss_at_requested_mib']:.0f} MiB at {idle['requested']:,}, scaled"
                      if idle.get("scaled") else "")
                   + f"; target ≤ {idle.get('target_mib', 64)} MiB: "
                   + ("met" if idle["rss_at_requested_mib"] <= idle.get("target_mib", 64) else "NOT met"))
    elif idle:
        out.append(f"- idle memory: failed ({idle.get('error', '?')})")
    else:
        out.append("- idle memory: not measured (OURS_IDLE_CMD unset, or IDLE=0 in bench/run.sh)")
    for key in ("ours", "ours-h2c"):
        if key in split:
            b, g, o = split[key]
            out.append(f"- split check{' over h2c' if key.endswith('h2c') else ''}: ours sent {b} blue / "
                       f"{g} green / {o} other of 1000 (expected 900/100/0)")
    if "ours" in switch_failed:
        out.append(f"- switch under load: failed requests for ours? {switch_failed['ours']}"
                   + "".join(f"; {t}: {v}" for t, v in switch_failed.items() if t != "ours"))
    out.append("")
    return out


out[SUMMARY_AT:SUMMARY_AT] = summary()
print("\n".join(out))
