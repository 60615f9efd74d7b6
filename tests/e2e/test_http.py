"""Scenario 1: python's http.server in the guest, fetched with curl on the
host, for the two IPv4 listeners that map to host 127.0.0.1:P. Also checks
that status counts the connection and its bytes (counters that never move
would pass a test that only fetches)."""

import os
import unittest

from lrharness import LorelayTestCase, curl, free_port


class HttpServerForwarding(LorelayTestCase):

    def _serve_and_fetch(self, bind):
        port = free_port()
        docroot = os.path.join(self.lr.tmpdir, "www")
        os.makedirs(docroot, exist_ok=True)
        body = ("served from the guest namespace %s on %s:%d\n" % (self.lr.netns, bind, port)).encode()
        with open(os.path.join(docroot, "hello.txt"), "wb") as f:
            f.write(body)
        self.lr.http_server(docroot, bind, port)
        guest = "%s:%d" % (bind, port)
        p, took = self.lr.wait_port(guest, "forwarding", timeout=3.0)
        self.assertEqual(p["host"], ["127.0.0.1:%d" % port])
        self.assertEqual(p["proto"], "tcp")

        rc, out, err = curl("http://127.0.0.1:%d/hello.txt" % port)
        self.assertEqual(rc, 0, "curl failed: " + err)
        self.assertEqual(out, body)

        # Counters are updated when a connection ends; give them a moment.
        p, _ = self.lr.wait_port(guest, "forwarding", timeout=2.0,
                                 pred=lambda q: q["connections"] >= 1 and q["bytes_to_guest"] > 0
                                 and q["bytes_to_host"] > len(body))
        self.assertGreaterEqual(p["connections"], 1)
        # The request line alone is longer than 20 bytes; the reply carries the body.
        self.assertGreater(p["bytes_to_guest"], 20)
        self.assertGreater(p["bytes_to_host"], len(body))

    def test_wildcard_v4(self):
        self._serve_and_fetch("0.0.0.0")

    def test_loopback_v4(self):
        self._serve_and_fetch("127.0.0.1")


if __name__ == "__main__":
    unittest.main()
