"""Scenario 2: a dual-stack [::]:P listener (V6ONLY off) is forwarded to
both host 127.0.0.1:P and [::1]:P. Two guests servers: python's http.server
--bind :: (checked with ss to really be dual-stack), and our own socket with
IPV6_V6ONLY=0 set explicitly, so the sysctl default cannot decide it."""

import os
import unittest

from lrharness import LorelayTestCase, curl, free_port


class DualStack(LorelayTestCase):

    def test_http_server_bind_any6(self):
        port = free_port()
        docroot = os.path.join(self.lr.tmpdir, "www")
        os.makedirs(docroot)
        body = b"dual-stack guest content\n"
        with open(os.path.join(docroot, "index.txt"), "wb") as f:
            f.write(body)
        self.lr.http_server(docroot, "::", port)
        # ss prints a dual-stack wildcard as "*:P" and a V6ONLY one as "[::]:P".
        ss = self.lr.netns_exec("ss", "-ltnH", "sport = :%d" % port).stdout
        self.assertIn("*:%d" % port, ss, "http.server --bind :: is not dual-stack here: " + ss)

        p, _ = self.lr.wait_port("[::]:%d" % port, "forwarding")
        self.assertEqual(sorted(p["host"]), sorted(["127.0.0.1:%d" % port, "[::1]:%d" % port]))
        for url in ("http://127.0.0.1:%d/index.txt" % port, "http://[::1]:%d/index.txt" % port):
            rc, out, err = curl(url)
            self.assertEqual(rc, 0, url + ": " + err)
            self.assertEqual(out, body, url)

    def test_explicit_v6only_off(self):
        port = free_port()
        self.lr.guest_server("banner", "::", port, "v6only=0", "tag=dual")
        p, _ = self.lr.wait_port("[::]:%d" % port, "forwarding")
        self.assertEqual(sorted(p["host"]), sorted(["127.0.0.1:%d" % port, "[::1]:%d" % port]))
        self.assertBanner("127.0.0.1", port, b"guest:dual\n")
        self.assertBanner("::1", port, b"guest:dual\n")


if __name__ == "__main__":
    unittest.main()
