"""Fault 13: 4 GiB each way through one relayed connection at the same time,
intact. Both ends send the same deterministic pattern (a 1 MiB pseudo-
random block whose first 8 bytes number the chunk, so a lost, repeated or
reordered chunk changes the digest); each end hashes what it sends and
what it receives. sha256 of sent == sha256 of received, both ways, and byte
counts match. Bounded at 120 s; the time and Gbit/s are printed (on a small
machine the four Python sha256 streams, not the relay, set that pace).
LORELAY_BULK_GIB overrides the size (a sanitizer build is too slow for 4 GiB)."""

import hashlib
import os
import socket
import threading
import time
import unittest

from lrharness import LorelayTestCase, free_port
from lrhostile import Checks, measure, stress_server

import stress_srv

SIZE = int(float(os.environ.get("LORELAY_BULK_GIB", "4")) * (1 << 30))
BOUND_S = 120.0


class Bulk4GiB(Checks, LorelayTestCase):

    def test_4gib_each_way(self):
        lr = self.lr
        port = free_port()
        srv = stress_server(lr, "duplex", "0.0.0.0", port, "size=%d" % SIZE, "timeout=60")
        lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.settimeout(60)
        res = {}

        def rx():
            h = hashlib.sha256()
            n = 0
            buf = bytearray(1 << 20)
            try:
                while True:
                    k = s.recv_into(buf)
                    if not k:
                        break
                    h.update(memoryview(buf)[:k])
                    n += k
                    if time.monotonic() - t0 > BOUND_S:
                        res["rx_err"] = "over %.0f s" % BOUND_S
                        break
            except OSError as e:
                res["rx_err"] = repr(e)
            res["rx"] = (n, h.hexdigest())
            res["rx_done"] = time.monotonic()

        t0 = time.monotonic()
        tr = threading.Thread(target=rx, daemon=True)
        tr.start()
        h = hashlib.sha256()
        sent = 0
        try:
            for chunk in stress_srv.pattern_chunks(SIZE):
                h.update(chunk)
                s.sendall(chunk)
                sent += len(chunk)
                if time.monotonic() - t0 > BOUND_S:
                    res["tx_err"] = "over %.0f s" % BOUND_S
                    break
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            res["tx_err"] = repr(e)
        t_tx = time.monotonic() - t0
        tr.join(max(1.0, BOUND_S + 5 - (time.monotonic() - t0)))
        s.close()
        el = max(t_tx, (res.get("rx_done") or time.monotonic()) - t0)
        sent_sha = h.hexdigest()
        n_rx, rx_sha = res.get("rx", (0, None))
        gbps = (sent + n_rx) * 8 / el / 1e9
        measure("bulk_each_way_bytes", SIZE)
        measure("bulk_time_s", "%.2f (upload done at %.2f, download at %.2f)"
                % (el, t_tx, (res.get("rx_done") or time.monotonic()) - t0))
        measure("bulk_throughput", "%.2f Gbit/s total, %.2f Gbit/s each way" % (gbps, gbps / 2))
        self.check("tx_err" not in res, "upload: %s" % res.get("tx_err"))
        self.check("rx_err" not in res, "download: %s" % res.get("rx_err"))
        self.check(sent == SIZE, "sent %d of %d" % (sent, SIZE))
        self.check(n_rx == SIZE, "host received %d of %d bytes" % (n_rx, SIZE))
        self.check(rx_sha == sent_sha, "host received a different stream (sha256 %s, sent %s)"
                   % (rx_sha, sent_sha))
        try:
            ev = srv.wait_event("received", timeout=15)
            self.check(ev["bytes"] == SIZE, "guest received %d of %d bytes" % (ev["bytes"], SIZE))
            self.check(ev["sha256"] == sent_sha, "guest received a different stream (sha256 %s, "
                       "sent %s)" % (ev["sha256"], sent_sha))
            ev = srv.wait_event("sent", timeout=5)
            self.check(ev["bytes"] == SIZE, "guest sent %d of %d (%s)" % (ev["bytes"], SIZE,
                                                                        ev.get("how")))
            self.check(ev.get("sha256") == rx_sha, "host received a different stream than the "
                       "guest sent (sha256 %s, guest sent %s)" % (rx_sha, ev.get("sha256")))
        except AssertionError as e:
            self.check(False, "guest server report missing: %s" % str(e)[:300])
        self.check(el < BOUND_S, "took %.1f s (bound %.0f)" % (el, BOUND_S))
        self.verify()


if __name__ == "__main__":
    unittest.main()
