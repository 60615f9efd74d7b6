"""Hostile agent 2: REVERSE_OPEN flood. The host publishes one port
(reversePorts = P) whose host server listens but never accepts, and the
fake agent takes every reverse stream but never answers ATTACH, so each
reverse connection lorelayd starts stays pending with two fds (the host
connection and the reverse stream). 3 000 REVERSE_OPENs for P must not
cost 6 000 fds: at most maxPendingReverse (default 64) are pending, the
fd count stays below baseline + 2*64 + 32, the excess is answered with
REVERSE_FAIL, and one log line names maxPendingReverse."""

import socket
import time
import unittest

from lrharness import free_port
from lrhostile import (FakeGuestDaemon, HostileTestCase, fd_count, hwm_kb, log_lines, measure,
                       raise_nofile, rss_kb)
import lrpeer as P  # tests/lrpeer.py, on the path through lrharness

N = 3000
MAX_PENDING = 64


class ReverseFlood(HostileTestCase):
    START = False
    AGENT = {"reverse": "hang"}

    def test_reverse_open_flood(self):
        raise_nofile(4 * N + 1024)
        port = free_port()
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", port))
        srv.listen(4096)  # never accepted: every connect lorelayd makes stays queued
        self.addCleanup(srv.close)
        fg = self.fg = self._fresh("[lorelay]\nreversePorts = %d\n" % port)
        ctl = self.ctl
        ctl.start_reader(autopong=True)
        time.sleep(0.3)
        base = fd_count(fg.pid)
        measure("lorelayd_fds_baseline", base)

        t0 = time.monotonic()
        ctl.send(b"".join(P.reverse_open_frame(i + 1, 4, port) for i in range(N)), timeout=30)
        # Sampled for 3 s: shorter than lorelayd's 5 s handshake timeout, so
        # REVERSE_FAILs counted here answer the excess, not expired attempts.
        peak = base
        deadline = t0 + 3.0
        while time.monotonic() < deadline:
            n = fd_count(fg.pid)
            if n is None:
                break
            peak = max(peak, n)
            time.sleep(0.05)
        limit = base + 2 * MAX_PENDING + 32
        measure("lorelayd_fds_peak", peak, "(limit %d)" % limit)
        measure("lorelayd_rss_during_flood", "%s KiB (peak %s)" % (rss_kb(fg.pid), hwm_kb(fg.pid)))
        measure("fake_agent_reverse_streams", fg.agent.stats["reverse"])

        nfail = ctl.count(P.REVERSE_FAIL)
        fails = nfail >= N - MAX_PENDING
        measure("reverse_fail_frames", nfail, "within %.1f s" % (time.monotonic() - t0))

        self.check(fg.alive(), "lorelayd died under the REVERSE_OPEN flood")
        self.check(peak < limit, "lorelayd held %d fds (baseline %d, limit %d): pending reverse "
                   "connections are not bounded" % (peak, base, limit))
        self.check(fails, "only %d REVERSE_FAIL answers within 3 s for %d REVERSE_OPENs "
                   "(want >= %d)" % (nfail, N, N - MAX_PENDING))
        lines = log_lines(fg.log(), r"maxPendingReverse")
        measure("maxPendingReverse_log_lines", len(lines))
        self.check(lines, "no log line mentioning maxPendingReverse")
        self.check(len(lines) <= 3, "%d maxPendingReverse lines for one flood" % len(lines))
        self.verify()

    def _fresh(self, config):
        self.fg.cleanup()
        fg = FakeGuestDaemon(config=config, agent_kwargs=self.AGENT)
        self.fg = fg
        fg.start()
        self.ctl = fg.control()
        fg.wait_connected()
        return fg


if __name__ == "__main__":
    unittest.main()
