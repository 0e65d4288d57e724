#!/usr/bin/env python3
"""bench/alloc_sites.py — heaptrack's allocation stacks (`heaptrack_print -F`, allocation counts)
per request, grouped by the first frames outside the allocator and std's containers; used by
bench/alloc_sites.sh.

usage: alloc_sites.py STACKS REQUESTS [MIN_PER_REQUEST] [FRAMES]

Prints the sites allocating at least MIN_PER_REQUEST times per request (default 0.1), each as its
first FRAMES (default 6) frames, leaf first, symbols demangled by c++filt (Rust v0 names)."""
import collections
import re
import subprocess
import sys

# Frames that say how, not where: the allocator, std's boxes and containers, formatting.
HOW = re.compile(
    r"(GlobalAlloc|__rdl|__rust_alloc|^alloc$|malloc|realloc|calloc|finish_grow|grow_|reserve"
    r"|with_capacity|^new<?>?$|^from_elem|try_allocate|^to_vec|append_elements|extend_from_slice"
    r"|push_str|write_str)"
)
HOW_FILES = {"alloc.rs", "raw_vec/mod.rs", "boxed.rs", "slice.rs", "spec_extend.rs",
             "spec_from_elem.rs", "spec_from_iter.rs", "spec_from_iter_nested.rs", "unix.rs",
             "string.rs", "iterator.rs", "option.rs", "result.rs", "function.rs", "sync.rs"}


def how(frame):
    match = re.match(r"(.*) \(([^)]*)\)$", frame)
    name, file = (match.group(1), match.group(2)) if match else (frame, "")
    if "async" in name or "closure" in name:
        return False
    return file in HOW_FILES or bool(HOW.search(name.split("::")[-1]))


def main():
    path, requests = sys.argv[1], float(sys.argv[2])
    least = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 6
    rows = []
    with open(path) as lines:
        for line in lines:
            stack, count = line.rstrip("\n").rsplit(" ", 1)
            rows.append((int(count), stack.split(";")))
    names = sorted({frame for _, stack in rows for frame in stack})
    demangled = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True,
                               text=True, check=True).stdout.split("\n")
    plain = {name: re.sub(r"\[[0-9a-f]+\]", "", d) for name, d in zip(names, demangled)}
    sites = collections.Counter()
    for count, stack in rows:
        frames = [f for f in (plain[f] for f in reversed(stack) if f) if not how(f)]
        sites[" <- ".join(f[-80:] for f in frames[:depth])] += count
    print(f"{sum(sites.values()) / requests:.2f} allocations per request (malloc, realloc, calloc)")
    for site, count in sites.most_common():
        if count / requests < least:
            break
        print(f"{count / requests:6.2f}  {site}")


if __name__ == "__main__":
    main()
