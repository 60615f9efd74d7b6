"""Listener churn must not flood the log (issue 18, finding 5).

A fake agent sends 20 000 LISTENER_ADD/LISTENER_DEL pairs. Every stand-in
it opens and closes is a line lorelayd would log; lines a guest can
provoke at will are rate-limited per kind (a few a second) with a count of
what was suppressed, so the log stays a few dozen lines and says how many
it left out. Forwarding itself is not rate-limited: the last listener is
forwarded and status is right."""

import re
import time
import unittest

from lrhostile import HostileTestCase, log_lines, measure
from lrharness import free_port, poll
import lrpeer

PAIRS = 20000


class ListenerChurnLog(HostileTestCase):

    def test_churn_lines_bounded(self):
        ports = [free_port() for _ in range(4)]
        before = len(self.fg.log().splitlines())
        mark = len(self.fg.log())
        self.ctl.start_reader(keep=False)
        t0 = time.monotonic()
        batch = []
        for i in range(PAIRS):
            p = ports[i % len(ports)]
            batch.append(lrpeer.listener_frame("127.0.0.1", p))
            batch.append(lrpeer.listener_frame("127.0.0.1", p, add=False))
            if len(batch) >= 2000:
                self.ctl.send(b"".join(batch))
                batch = []
        if batch:
            self.ctl.send(b"".join(batch))
        last = ports[0]
        self.ctl.send(lrpeer.listener_frame("127.0.0.1", last))

        def forwarding():
            p = self.fg.ports().get("127.0.0.1:%d" % last)
            return p if p and p.get("state") == "forwarding" else None
        ok, _ = poll(forwarding, 30.0, 0.1)
        took = time.monotonic() - t0
        # The count of what was left out is logged once its second is over,
        # by the guest's next tick (every second): within 2 s.
        poll(lambda: re.search(r"more line\(s\) like", self.fg.log()[mark:]) or None, 3.0, 0.1)
        log = self.fg.log()
        lines = log.splitlines()[before:]
        measure("churn", "%d pairs in %.2f s" % (PAIRS, took))
        measure("log lines for the churn", len(lines))
        measure("log bytes", sum(len(l) + 1 for l in lines))
        suppressed = [l for l in lines if re.search(r"not logged|more like it", l)]
        for l in suppressed[:4]:
            print("  " + l)
        self.check(ok is not None, "the last listener was not forwarded")
        self.check(self.fg.alive(), "lorelayd died")
        self.check(len(lines) <= 200, "%d log lines for %d listener pairs" % (len(lines), PAIRS))
        self.check(len(suppressed) >= 1, "no line says how many were suppressed")
        self.verify()


if __name__ == "__main__":
    unittest.main()
