"""Scenario 6: the host port is already taken by a host process. Status
shows "conflict", the host's own server keeps answering (its content, not
the guest's), and once the host server stops and the port stayed free
for conflictGraceSeconds (1 s here; default 10), lorelay's retry (default
conflictRetryMs=1000) takes the port within about 3 s."""

import os
import sys
import time
import unittest

from lrharness import LorelayTestCase, curl, free_port, poll


class PortConflict(LorelayTestCase):
    CONFIG = "[lorelay]\nconflictGraceSeconds = 1\n"

    def test_conflict_then_forwarding(self):
        lr = self.lr
        port = free_port()
        host_root = os.path.join(lr.tmpdir, "host-www")
        guest_root = os.path.join(lr.tmpdir, "guest-www")
        os.makedirs(host_root)
        os.makedirs(guest_root)
        with open(os.path.join(host_root, "who.txt"), "wb") as f:
            f.write(b"HOST content\n")
        with open(os.path.join(guest_root, "who.txt"), "wb") as f:
            f.write(b"GUEST content\n")
        url = "http://127.0.0.1:%d/who.txt" % port

        host_srv = lr.http_server(host_root, "127.0.0.1", port, where="host")
        lr.http_server(guest_root, "0.0.0.0", port)
        guest = "0.0.0.0:%d" % port
        lr.wait_port(guest, "conflict", timeout=3.0)

        # Over several retry periods the host server must stay untouched.
        for _ in range(3):
            rc, out, err = curl(url)
            self.assertEqual(rc, 0, err)
            self.assertEqual(out, b"HOST content\n")
            time.sleep(0.5)
        self.assertEqual(lr.port(guest)["state"], "conflict")

        host_srv.stop()
        t0 = time.monotonic()
        p, took = lr.wait_port(guest, "forwarding", timeout=6.0)
        self.assertEqual(p["host"], ["127.0.0.1:%d" % port])

        def guest_answers():
            rc, out, _ = curl(url, timeout=2.0)
            return rc == 0 and out == b"GUEST content\n"
        ok, _ = poll(guest_answers, 2.0, 0.02)
        took = time.monotonic() - t0
        print("forwarding took over %.0f ms after the host server stopped" % (took * 1000), file=sys.stderr)
        self.assertTrue(ok, "guest content not served after the host port freed")
        self.assertGreaterEqual(took, 0.9, "port taken %.0f ms after it freed: grace 1 s"
                                % (took * 1000))
        self.assertLess(took, 3.5, "port taken over only after %.0f ms" % (took * 1000))


if __name__ == "__main__":
    unittest.main()
