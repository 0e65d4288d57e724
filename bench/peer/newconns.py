#!/usr/bin/env python3
"""newconns.py PORT RATE SECONDS — RATE new connections per second to 127.0.0.1:PORT for SECONDS,
evenly spaced, each one `GET /` with `Connection: close` read to its end (case C15's short
connections). Prints one JSON object: requests started, answered 2xx, and every failure by kind
(refused, reset, timeout (5 s), closed before a whole head, non-2xx status). Used by swaps.sh."""
import asyncio
import json
import sys
import time


async def one(port, counts):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except ConnectionRefusedError:
        counts["refused"] += 1
        return
    except (asyncio.TimeoutError, OSError):
        counts["timeout"] += 1
        return
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(-1), 5)
        if b"\r\n\r\n" not in data:
            counts["incomplete"] += 1
        elif data[9:10] == b"2":
            counts["ok"] += 1
        else:
            counts["status"] += 1
    except (ConnectionResetError, BrokenPipeError):
        counts["reset"] += 1
    except asyncio.TimeoutError:
        counts["timeout"] += 1
    except OSError:
        counts["reset"] += 1
    finally:
        writer.close()


async def main(port, rate, seconds):
    counts = dict(started=0, ok=0, refused=0, reset=0, timeout=0, incomplete=0, status=0)
    tasks = []
    start = time.monotonic()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        counts["started"] += 1
        tasks.append(asyncio.create_task(one(port, counts)))
    await asyncio.gather(*tasks)
    print(json.dumps(counts))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])))
