"""Scenario 5: when the guest server stops, the host stand-in goes away
within 1 s (the agent polls every 100 ms by default). The time is measured
from the guest server's exit to the first refused connect on the host."""

import sys
import time
import unittest

from lrharness import LorelayTestCase, free_port, wait_refused


class StandInGoes(LorelayTestCase):

    def _stop_and_measure(self, bind, host_addrs):
        port = free_port()
        srv = self.lr.guest_server("banner", bind, port, "v6only=0", "tag=stop")
        guest = ("[%s]:%d" % (bind, port)) if ":" in bind else ("%s:%d" % (bind, port))
        self.lr.wait_port(guest, "forwarding")
        for h in host_addrs:
            self.assertBanner(h, port, b"guest:stop\n")
        srv.stop()
        t_stopped = time.monotonic()
        for h in host_addrs:
            took = wait_refused(h, port, timeout=3.0)
            self.assertIsNotNone(took, "stand-in %s:%d still accepting 3 s after the guest server stopped"
                                 % (h, port))
        took = time.monotonic() - t_stopped
        print("stand-in gone %.1f ms after guest server exit (%s)" % (took * 1000, guest), file=sys.stderr)
        self.assertLess(took, 1.0, "stand-in closed only after %.0f ms" % (took * 1000))
        self.lr.wait_port_absent(guest, timeout=1.0)

    def test_v4(self):
        self._stop_and_measure("0.0.0.0", ["127.0.0.1"])

    def test_dual_stack(self):
        self._stop_and_measure("::", ["127.0.0.1", "::1"])


if __name__ == "__main__":
    unittest.main()
