"""Scenario 3: a V6ONLY [::]:P listener is forwarded to host [::1]:P only;
host 127.0.0.1:P must refuse (a stand-in there would accept connections the
guest server can never take)."""

import unittest

from lrharness import LorelayTestCase, free_port


class V6Only(LorelayTestCase):

    def test_v6only_any(self):
        port = free_port()
        self.lr.guest_server("banner", "::", port, "v6only=1", "tag=v6only")
        ss = self.lr.netns_exec("ss", "-ltnH", "sport = :%d" % port).stdout
        self.assertIn("[::]:%d" % port, ss, "listener is not V6ONLY: " + ss)
        p, _ = self.lr.wait_port("[::]:%d" % port, "forwarding")
        self.assertEqual(p["host"], ["[::1]:%d" % port])
        self.assertBanner("::1", port, b"guest:v6only\n")
        self.assertRefused("127.0.0.1", port)

    def test_v6_loopback(self):
        port = free_port()
        self.lr.guest_server("banner", "::1", port, "v6only=1", "tag=lo6")
        p, _ = self.lr.wait_port("[::1]:%d" % port, "forwarding")
        self.assertEqual(p["host"], ["[::1]:%d" % port])
        self.assertBanner("::1", port, b"guest:lo6\n")
        self.assertRefused("127.0.0.1", port)


if __name__ == "__main__":
    unittest.main()
