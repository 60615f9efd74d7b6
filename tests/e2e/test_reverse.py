"""Reverse forwarding (reversePorts): a guest client of localhost:P reaches
the host's localhost:P, over either family (the host tries the other loopback
when the guest's choice is refused); a published port with no host server
gives the guest client a reset, not a hang; the agent's own published
sockets are never reported back as guest listeners (no forwarding loop); only
the listed ports can be asked for."""

import os
import time
import unittest

from lrharness import LorelayTestCase, Lorelay, free_ports, poll


class Reverse(LorelayTestCase):
    START = False

    def test_guest_reaches_host(self):
        p_rev, p_none = free_ports(2)
        self.lr.cleanup()
        self.lr = Lorelay(config="[lorelay]\nreversePorts = %d, %d\n" % (p_rev, p_none))
        lr = self.lr
        www = os.path.join(lr.tmpdir, "hostwww")
        os.makedirs(www)
        body = "served by the host on 127.0.0.1:%d\n" % p_rev
        with open(os.path.join(www, "index.txt"), "w") as f:
            f.write(body)
        lr.http_server(www, "127.0.0.1", p_rev, where="host")
        lr.start()

        def guest_fetch(url):
            r = lr.netns_exec("curl", "-sS", "--max-time", "3", url, check=False)
            return r.stdout if r.returncode == 0 else None

        got, waited = poll(lambda: guest_fetch("http://127.0.0.1:%d/index.txt" % p_rev), 5.0, 0.05)
        self.assertEqual(got, body, "guest 127.0.0.1:%d did not reach the host server" % p_rev)
        # The host server listens on IPv4 only: [::1] in the guest must still
        # reach it through the host's fallback to the other loopback.
        self.assertEqual(guest_fetch("http://[::1]:%d/index.txt" % p_rev), body)

        # Published, but nothing on the host: a reset (at connect or at the
        # first read: the reset can beat connect() returning), quickly; a
        # refusal would mean nothing was published.
        probe = ("import socket,sys\n"
                 "try:\n"
                 "    s=socket.create_connection(('127.0.0.1',%d),timeout=3); s.sendall(b'x')\n"
                 "    print('data', s.recv(10))\n"
                 "except ConnectionResetError: print('reset')\n"
                 "except ConnectionRefusedError: print('refused')\n"
                 "except socket.timeout: print('hang')\n" % p_none)
        t = time.monotonic()
        r = lr.netns_exec("python3", "-c", probe, check=False)
        self.assertEqual(r.stdout.strip(), "reset", "guest client of an unserved port: %s %s"
                         % (r.stdout.strip(), r.stderr.strip()))
        self.assertLess(time.monotonic() - t, 2.0)

        st = lr.status()
        g = lr.guest(st)
        rev = {e["host"]: e for e in g["reverse"]}
        e = rev["localhost:%d" % p_rev]
        self.assertIn("127.0.0.1:%d" % p_rev, e["guest"])
        self.assertIn("[::1]:%d" % p_rev, e["guest"])
        self.assertEqual(e["connections"], 2)
        self.assertGreater(e["bytes_to_guest"], len(body))
        self.assertGreater(e["bytes_to_host"], 0)
        self.assertEqual(rev["localhost:%d" % p_none]["bytes_to_guest"], 0)
        # No loop: the agent's published sockets are not guest listeners.
        lr.settle()  # scans after the published sockets opened have reached the host
        reported = [p["guest"] for p in lr.guest()["ports"]]
        self.assertFalse([a for a in reported if a.endswith(":%d" % p_rev)],
                         "published port reported as a guest listener: %s" % reported)

    def test_unlisted_port_refused(self):
        """A guest without reversePorts has nothing published: refused."""
        p, = free_ports(1)
        self.lr.cleanup()
        self.lr = Lorelay()
        lr = self.lr
        lr.start()
        r = lr.netns_exec("curl", "-sS", "--max-time", "3", "http://127.0.0.1:%d/" % p,
                          check=False)
        self.assertEqual(r.returncode, 7, "expected connection refused (curl 7), got %d: %s"
                         % (r.returncode, r.stderr.strip()))


if __name__ == "__main__":
    unittest.main()
