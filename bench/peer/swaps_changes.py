#!/usr/bin/env python3
"""swaps_changes.py TARGET ROUNDS QUIET_S CHANGES GAP_MS — the weight changes of swaps.sh.

TARGET is `haproxy:<admin socket path>` (runtime API: `set weight pools/green G; set weight
pools/blue B`) or `ours:<admin port>:<route>` (`PUT /routes/<route>/weights` with basis points, on
one kept-alive connection). ROUNDS times: QUIET_S seconds with no change, then CHANGES changes
GAP_MS apart to random weights in [0,100] summing to 100, each different from the last; then one
more quiet window. One process does them all (no process started per change, on either target),
and prints each window as `quiet|changes ROUND START_NS END_NS` on stdout, and on stderr the
number of changes that failed."""
import http.client
import json
import random
import socket
import sys
import time


def haproxy_setter(path):
    def set_weights(blue, green):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path)
            s.sendall(f"set weight pools/green {green}; set weight pools/blue {blue}\n".encode())
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
            return not reply.strip()          # the runtime API answers nothing on success
    return set_weights


def ours_setter(port, route):
    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=5)

    def put(body):
        conn.request("PUT", f"/routes/{route}/weights", body,
                     {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        return 200 <= response.status < 300

    def set_weights(blue, green):
        body = json.dumps({"blue": blue * 100, "green": green * 100})
        try:
            return put(body)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The admin API closes a keep-alive connection idle through a quiet window: a new
            # one, and the same PUT again (setting weights is idempotent).
            conn.close()
            return put(body)
    return set_weights


def main():
    target, rounds, quiet, changes, gap_ms = sys.argv[1:6]
    kind, _, rest = target.partition(":")
    if kind == "haproxy":
        set_weights = haproxy_setter(rest)
    else:
        port, _, route = rest.partition(":")
        set_weights = ours_setter(port, route)
    rounds, quiet, changes, gap = int(rounds), float(quiet), int(changes), float(gap_ms) / 1000
    failed, last = 0, None
    for r in range(1, rounds + 2):
        t0 = time.time_ns()
        time.sleep(quiet)
        print(f"quiet {r} {t0} {time.time_ns()}", flush=True)
        if r > rounds:
            break
        t0 = time.time_ns()
        for _ in range(changes):
            green = random.randint(0, 100)
            while green == last:
                green = random.randint(0, 100)
            last = green
            if not set_weights(100 - green, green):
                failed += 1
            time.sleep(gap)
        print(f"changes {r} {t0} {time.time_ns()}", flush=True)
    print(failed, file=sys.stderr)


if __name__ == "__main__":
    main()
