#!/usr/bin/env python3
"""Detection latency: guest listen() -> host stand-in connectable.

Starts `lorelayd --netns` on a fresh namespace (through the e2e harness in
tests/e2e/lrharness.py), and one long-lived python process inside the
namespace that opens a listener on command and records CLOCK_MONOTONIC right
after listen() returns. The host polls connect() to 127.0.0.1:P in a tight
loop (bounded to 2 s) and records CLOCK_MONOTONIC when it first connects.
CLOCK_MONOTONIC is one clock for all network namespaces, so the difference
is the end-to-end detection latency: the agent's scan, the control message,
and the host binding its stand-in.

Each trial uses a fresh port and starts after a random delay, so trials
sample every phase of the agent's poll interval instead of the same one.
After each trial the listener is closed and the time until the host refuses
again is measured too (removal latency).

    scripts/measure-detection.py [--trials 30] [--max-p99-ms 400] [--bin-dir DIR]

Needs root (ip netns). Exit 0, 1 if --max-p99-ms is exceeded or a trial
timed out, 77 if this machine cannot run it (and CI is not set).
"""

import argparse
import json
import os
import random
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import lrharness  # noqa: E402

POLL_LIMIT_S = 2.0
POLL_SLEEP_S = 0.0002


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def connect_until(port, want_connect, limit):
    """Polls 127.0.0.1:port until a connect succeeds (want_connect) or is
    refused (not want_connect). Returns the monotonic time, or None."""
    deadline = now() + limit
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect(("127.0.0.1", port))
            ok = True
        except OSError:
            ok = False
        finally:
            s.close()
        t = now()
        if ok == want_connect:
            return t
        if t > deadline:
            return None
        time.sleep(POLL_SLEEP_S)


def percentile(sorted_vals, q):
    """Nearest-rank percentile (q in 0..100)."""
    if not sorted_vals:
        return float("nan")
    k = max(1, int(-(-q * len(sorted_vals) // 100)))
    return sorted_vals[min(k, len(sorted_vals)) - 1]


def summary(vals):
    v = sorted(vals)
    return {"n": len(v), "p50": percentile(v, 50), "p90": percentile(v, 90),
            "p99": percentile(v, 99), "max": v[-1] if v else float("nan"),
            "min": v[0] if v else float("nan")}


def fmt(name, s):
    return "%-7s n=%d  p50=%.1f ms  p90=%.1f ms  p99=%.1f ms  max=%.1f ms  (min %.1f ms)" % (
        name, s["n"], s["p50"], s["p90"], s["p99"], s["max"], s["min"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--max-p99-ms", type=float, default=None,
                    help="fail (exit 1) if the detection p99 exceeds this")
    ap.add_argument("--bin-dir", default=None, help="directory with lorelayd etc. (default $LORELAY_BIN_DIR)")
    ap.add_argument("--bind", default="0.0.0.0", help="guest listen address (0.0.0.0 or 127.0.0.1)")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    if args.trials < 1 or args.trials > 10000:
        ap.error("--trials must be 1..10000")
    if args.bin_dir:
        os.environ["LORELAY_BIN_DIR"] = args.bin_dir
    if args.seed is not None:
        random.seed(args.seed)
    lrharness.check_environment_or_exit()

    lr = lrharness.Lorelay(tag="lrd")
    failed = False
    add_ms, del_ms = [], []
    timeouts = 0
    try:
        lr.start()
        helper = lr.spawn([lrharness.PYTHON, "-u", lrharness.GUESTSRV, "detect", "-", "0"],
                          "detect", stdin=True)
        helper.wait_event("ready")
        for i in range(args.trials):
            port = lrharness.free_port()
            time.sleep(random.uniform(0.0, 0.25))
            helper.send("listen %s %d" % (args.bind, port))
            t_conn = connect_until(port, True, POLL_LIMIT_S)
            ev = helper.wait_event("listening", timeout=5.0, count=i + 1)
            if t_conn is None:
                timeouts += 1
                print("trial %d: port %d not connectable within %.0f s" % (i, port, POLL_LIMIT_S),
                      file=sys.stderr)
            else:
                add_ms.append((t_conn - ev["t"]) * 1000.0)
            # A fresh random delay, or the close would always land just
            # after the scan that found the listener (phase-locked).
            time.sleep(random.uniform(0.0, 0.25))
            helper.send("close")
            t_gone = connect_until(port, False, POLL_LIMIT_S)
            t_closed = helper.wait_event("closed", timeout=5.0, count=i + 1)["t"]
            if t_gone is None:
                timeouts += 1
                print("trial %d: stand-in %d still accepting %.0f s after close" % (i, port, POLL_LIMIT_S),
                      file=sys.stderr)
            else:
                del_ms.append((t_gone - t_closed) * 1000.0)
        helper.send("quit")
    except Exception:
        failed = True
        lr.dump()
        raise
    finally:
        lr.cleanup()

    add_s, del_s = summary(add_ms), summary(del_ms)
    print("detection latency, guest %s listen() -> host 127.0.0.1 connectable, %d trials:"
          % (args.bind, args.trials))
    print(fmt("add", add_s))
    print(fmt("remove", del_s))
    if timeouts:
        print("%d trial(s) timed out" % timeouts)
    if args.json:
        print(json.dumps({"trials": args.trials, "bind": args.bind, "add_ms": add_s,
                          "remove_ms": del_s, "timeouts": timeouts}))
    if timeouts or failed:
        return 1
    if args.max_p99_ms is not None and add_s["p99"] > args.max_p99_ms:
        print("FAIL: detection p99 %.1f ms > %.1f ms" % (add_s["p99"], args.max_p99_ms), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
