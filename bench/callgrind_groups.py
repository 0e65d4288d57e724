#!/usr/bin/env python3
"""Exclusive instructions per request by source group, for callgrind profiles side by side.

usage: bench/callgrind_groups.py REQUESTS NAME=callgrind.out.N [NAME=...]
       bench/callgrind_groups.py 0 NAME=callgrind.out.N@REQUESTS ...   (each profile's own count,
       as `PROFILE_CLOSE` runs give: wrk's requests differ from run to run)
       EVENT=I1mr bench/callgrind_groups.py ...   (another event of the profiles than Ir: I1mr,
       D1mr, D1mw from `CACHE_SIM=1 bench/profile.sh`, instruction-cache and data-cache misses)

Each profile (from bench/profile.sh, or any callgrind dump of a proxy serving REQUESTS requests)
goes through `callgrind_annotate --inclusive=no`, whose rows are per function *and source file*:
code inlined from another crate is counted under that crate's file. Rows are grouped by where
their source is (glibc memcpy, glibc malloc/free, hyper, http, tokio by area, crossfade-proxy by
module, std/core inlined into ours or into others...) and printed as a markdown table, instructions
per request, sorted by the difference between the first two columns. docs/bench-2026-12-01-instructions.md
shows what the groups mean and how to read them.
"""
import collections
import os
import re
import subprocess
import sys


EVENT = os.environ.get("EVENT", "Ir")


def rows(out):
    """(instructions, source file, function) per row of callgrind_annotate, and the total."""
    txt = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=no", "--auto=no",
         f"--show={EVENT}", f"--sort={EVENT}", out],
        capture_output=True, text=True, check=True).stdout
    total, started = 0, False
    for line in txt.splitlines():
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
        if "file:function" in line:
            started = True
            continue
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)$", line) if started else None
        if not m:
            continue
        rest = m.group(2)
        if any(s in rest for s in ("(below main)", "libc_start", "short_backtrace", ":main ", "0x0000")):
            continue
        if int(m.group(1).replace(",", "")) == total:
            # A frame that was on the stack for the whole dump (`block_on`, the runtime's entry,
            # `lang_start_internal`): with rustc 1.95's debug info, valgrind 3.19's annotate shows
            # such frames with the program's whole cost even under --inclusive=no, which counted
            # every instruction twice (session 44). No function's own cost is the whole total.
            continue
        path = rest.split(":")[0]
        yield int(m.group(1).replace(",", "")), path, rest[len(path) + 1:]
    yield total, None, None


def group(path, function):
    if "memmove" in path or "memcpy" in function:
        return "memcpy (glibc)"
    if "malloc" in path:
        return "malloc/free (glibc)"
    if path.startswith("./"):
        return "other glibc (clock_gettime, ...)"
    if "/rustc/" in path:
        ours = "crossfade" in function
        return "std/core inlined in ours" if ours else "std/core inlined in hyper, tokio, others"
    if path.endswith("floor/src/main.rs") or ("floor" in function and path.endswith("src/main.rs")):
        # The minimal proxy of docs/bench-2026-12-01-instructions.md: its own code.
        return "request path: forward, handle, server, ... (ours)"
    if re.search(r"(^|/)proxy/src/", path):
        module = re.split(r"(?:^|/)proxy/src/", path)[1]
        for prefix, name in (("stats", "metrics, stats, histogram (ours)"),
                             ("histogram", "metrics, stats, histogram (ours)"),
                             ("metrics", "metrics, stats, histogram (ours)"),
                             ("limits", "body wrappers: Limited, ProxyBody (ours)"),
                             ("body", "body wrappers: Limited, ProxyBody (ours)"),
                             ("upstream", "upstream: idle stack, exchange, ResponseBody (ours)"),
                             ("headers", "header rules (ours)"),
                             ("idle", "connection watch: idle/drain (ours)")):
            if module.startswith(prefix):
                return name
        return "request path: forward, handle, server, ... (ours)"
    if re.search(r"(^|/)vendor/hyper/", path) or re.search(r"/hyper-1\.", path):
        client = "/client/" in path
        return "hyper client dispatch (mpsc, oneshot)" if client else "hyper h1 (parse, encode, io, dispatch)"
    m = re.search(r"index\.crates\.io-[0-9a-f]+/([^/]+)/", path)
    crate = re.sub(r"-[0-9][0-9.]*$", "", m.group(1)) if m else "other"
    if crate == "tokio":
        area = re.search(r"tokio-[0-9.]+/src/(.*)", path).group(1)
        if area.startswith(("runtime/time", "time/")):
            return "timers (tokio time)"
        if area.startswith(("sync/notify", "sync/watch")):
            return "tokio watch, Notify"
        if area.startswith(("sync/mpsc", "sync/oneshot")):
            return "hyper client dispatch (mpsc, oneshot)"
        if area.startswith("sync/batch_semaphore"):
            return "tokio semaphore"
        return "tokio runtime, I/O, coop"
    if crate in ("futures-util", "futures-core", "pin-project-lite"):
        return "futures combinators"
    if crate in ("http", "httparse", "bytes"):
        return crate
    return "other crates (arc-swap, want, smallvec, ...)"


def main():
    requests = int(sys.argv[1])
    columns = [arg.split("=", 1) for arg in sys.argv[2:]]
    sums, totals = [], []
    for _, out in columns:
        out, _, own = out.partition("@")
        per = int(own) if own else requests
        counts, total = collections.Counter(), 0
        for ir, path, function in rows(out):
            if path is None:
                total = ir
            else:
                counts[group(path, function)] += ir
        sums.append(collections.Counter({k: v / per for k, v in counts.items()}))
        totals.append(total / per)
    first = sums[0]
    second = sums[1] if len(sums) > 1 else first
    keys = sorted(set().union(*sums), key=lambda k: -(second[k] - first[k]) or -first[k])
    print("| group | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{c[key]:,.0f}" for c in sums) + " |")
    print("| **total (PROGRAM TOTALS)** | " + " | ".join(f"**{t:,.0f}**" for t in totals) + " |")


if __name__ == "__main__":
    main()
