#!/usr/bin/env python3
"""Opens N keep-alive HTTP/1.1 connections to HOST:PORT, sends one GET on each, reads the answer,
then keeps every connection open and idle until killed. Writes the number of 2xx answers to
READY_FILE once all connections have been answered. Used by bench/idle.sh."""

import asyncio
import resource
import sys


async def one(host, port, held):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    ok = head.startswith(b"HTTP/1.1 2")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if length:
        await reader.readexactly(length)
    held.append(writer)
    return ok


async def main():
    host, port, n, ready = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 100)), hard))
    held = []
    answered = 0
    # Open in batches so the listener's backlog is never the limit.
    for start in range(0, n, 500):
        batch = [one(host, port, held) for _ in range(start, min(n, start + 500))]
        answered += sum(await asyncio.gather(*batch))
    with open(ready, "w") as f:
        f.write(str(answered))
    await asyncio.Event().wait()


asyncio.run(main())
