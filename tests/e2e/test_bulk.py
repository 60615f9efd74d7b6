"""Scenario 7: bytes in order, nothing lost, and half-close passed through
as half-close. 64 MiB each way through one relayed connection, with sha256
checked on both ends (the guest reports what it received), and two small
cases: the client half-closes first, and the server half-closes first."""

import hashlib
import random
import socket
import time
import unittest

from lrharness import LorelayTestCase, free_port

SIZE = 64 << 20


def pattern(seed, size):
    return random.Random(seed).randbytes(size)


class BulkAndHalfClose(LorelayTestCase):

    def _connect(self, port, timeout=60.0):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        return s

    def test_64mib_each_way(self):
        port = free_port()
        srv = self.lr.guest_server("bulk", "0.0.0.0", port, "size=%d" % SIZE, "seed=2")
        self.lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        up = pattern(1, SIZE)
        up_sha = hashlib.sha256(up).hexdigest()
        down_sha_expected = hashlib.sha256(pattern(2, SIZE)).hexdigest()

        t0 = time.monotonic()
        s = self._connect(port)
        try:
            s.sendall(up)
            s.shutdown(socket.SHUT_WR)
            h = hashlib.sha256()
            n = 0
            while True:
                b = s.recv(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
        finally:
            s.close()
        el = time.monotonic() - t0

        rx = srv.wait_event("received", timeout=10)
        self.assertEqual(rx["bytes"], SIZE, "guest received a different byte count")
        self.assertEqual(rx["sha256"], up_sha, "guest received corrupted data")
        tx = srv.wait_event("sent", timeout=10)
        self.assertEqual(tx["sha256"], down_sha_expected)
        self.assertEqual(n, SIZE, "host received %d of %d bytes" % (n, SIZE))
        self.assertEqual(h.hexdigest(), down_sha_expected, "host received corrupted data")
        print("128 MiB relayed in %.2f s" % el)

        p, _ = self.lr.wait_port("0.0.0.0:%d" % port, "forwarding", timeout=2.0,
                                 pred=lambda q: q["bytes_to_guest"] >= SIZE and q["bytes_to_host"] >= SIZE)
        self.assertGreaterEqual(p["bytes_to_guest"], SIZE)

    def test_client_half_close(self):
        """Client shuts its write side; the server replies after EOF."""
        port = free_port()
        srv = self.lr.guest_server("halfreply", "0.0.0.0", port)
        self.lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        msg = b"request body, then FIN\n" * 100
        s = self._connect(port, timeout=10)
        try:
            s.sendall(msg)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                reply += b
        finally:
            s.close()
        self.assertEqual(reply, ("got %d %s\n" % (len(msg), hashlib.sha256(msg).hexdigest())).encode())
        rx = srv.wait_event("received")
        self.assertEqual(rx["bytes"], len(msg))

    def test_server_half_close(self):
        """Server sends and shuts its write side; the client still sends
        afterwards and the server must receive it."""
        port = free_port()
        srv = self.lr.guest_server("halffirst", "0.0.0.0", port)
        self.lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        s = self._connect(port, timeout=10)
        try:
            got = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break  # the server's FIN reached us as EOF, connection still open
                got += b
            self.assertEqual(got, b"banner-then-fin\n")
            late = b"sent after the server's FIN\n" * 1000
            s.sendall(late)
            s.shutdown(socket.SHUT_WR)
            rx = srv.wait_event("received", timeout=10)
        finally:
            s.close()
        self.assertEqual(rx["bytes"], len(late), "guest lost data sent after its half-close")
        self.assertEqual(rx["sha256"], hashlib.sha256(late).hexdigest())


if __name__ == "__main__":
    unittest.main()
