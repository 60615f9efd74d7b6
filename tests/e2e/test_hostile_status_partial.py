"""Status clients that send part of a request and stop (issue 18, finding
9).

40 clients connect to the status socket, each sends one byte of a request
and nothing more. maxStatusClients is 32: a newcomer must evict the oldest
client that has not sent a whole request (before, only clients that had
sent nothing at all could be evicted, so `lorelayctl status` got
"connection reset" until statusIdleTimeoutMs cut them). lorelayctl status
must answer at once, repeatedly."""

import time
import unittest

from lrhostile import HostileTestCase, measure, unix_connect


class StatusPartialRequests(HostileTestCase):

    def test_partial_requests_do_not_lock_out_status(self):
        socks = []
        for _ in range(40):
            try:
                s = unix_connect(self.fg.sock)
                s.sendall(b"s")
                socks.append(s)
            except OSError:
                pass
        time.sleep(0.3)
        measure("half-spoken status clients", len(socks))
        times = []
        try:
            for _ in range(5):
                t0 = time.monotonic()
                r = self.fg.ctl("status", "--json", timeout=10.0)
                took = time.monotonic() - t0
                times.append(took)
                self.assertEqual(r.returncode, 0, "lorelayctl status failed after %.2f s: %s"
                                 % (took, r.stderr.strip()))
                self.assertIn("guests", r.stdout)
        finally:
            measure("lorelayctl status with 40 half-spoken clients",
                    ", ".join("%.3f s" % t for t in times))
            for s in socks:
                s.close()
        self.assertLess(max(times), 1.0)


if __name__ == "__main__":
    unittest.main()
