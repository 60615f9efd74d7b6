"""Fault 12: 5 000 concurrent connections through one forwarded port to a
guest echo server. All are open at once (status shows 5 000 active), every
one gets its own bytes back, all within 60 s; after they close, lorelayd's
active count and fd count return to where they were."""

import selectors
import socket
import time
import unittest

from lrharness import LorelayTestCase, free_port, one_hop_expected, poll, skip_or_fail
from lrhostile import Checks, fd_count, measure, raise_nofile, stress_server

N = 5000
BOUND_S = 60.0


class ManyConnections(Checks, LorelayTestCase):

    def test_5000_concurrent(self):
        have = raise_nofile(N + 1024)
        if have < N + 256:
            skip_or_fail(self, "fd limit %d is too low for %d clients" % (have, N))
        lr = self.lr
        port = free_port()
        stress_server(lr, "echo", "0.0.0.0", port, "timeout=90")
        lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        pid = lr.daemon.pid
        base_fds = fd_count(pid)
        t0 = time.monotonic()
        socks, failed = [], []
        try:
            for i in range(N):
                if time.monotonic() - t0 > BOUND_S:
                    break
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=10)
                except OSError as e:
                    failed.append(repr(e))
                    continue
                s.setblocking(False)
                s.send(b"%08d" % i)
                socks.append((i, s))
            t_conn = time.monotonic() - t0
            measure("connects", "%d ok, %d failed in %.2f s" % (len(socks), len(failed), t_conn))
            self.check(not failed, "%d connects failed, e.g. %s" % (len(failed), failed[:3]))

            sel = selectors.DefaultSelector()
            got = {}
            for i, s in socks:
                sel.register(s, selectors.EVENT_READ, i)
                got[i] = b""
            pending = len(socks)
            while pending and time.monotonic() - t0 < BOUND_S:
                for key, _ in sel.select(1.0):
                    i = key.data
                    try:
                        b = key.fileobj.recv(64)
                    except BlockingIOError:
                        continue
                    except OSError:
                        b = b""
                    if not b:
                        sel.unregister(key.fileobj)
                        pending -= 1
                        continue
                    got[i] += b
                    if len(got[i]) >= 8:
                        sel.unregister(key.fileobj)
                        pending -= 1
            t_all = time.monotonic() - t0
            good = sum(1 for i, v in got.items() if v == b"%08d" % i)
            measure("echoed", "%d of %d in %.2f s" % (good, N, t_all))
            self.check(good == N, "%d of %d connections echoed their bytes within %.0f s"
                       % (good, N, BOUND_S))
            st = lr.port("0.0.0.0:%d" % port)
            measure("status_active_at_peak", st and st.get("active"))
            self.check(st and st.get("active") == len(socks), "status active %s, %d clients open"
                       % (st and st.get("active"), len(socks)))
            measure("lorelayd_fds_at_peak", fd_count(pid), "(baseline %d)" % base_fds)
        finally:
            for _, s in socks:
                s.close()
        idle, took = poll(lambda: (lr.port("0.0.0.0:%d" % port) or {}).get("active") == 0, 15.0, 0.2)
        measure("active_back_to_0_s", "%.2f" % took if idle else "no")
        self.check(idle, "active count not back to 0 15 s after closing: %s"
                   % lr.port("0.0.0.0:%d" % port))
        # One hop keeps a pool of sockets made in the namespace, filled once
        # a kind is first used: at most 16 per kind, and this test uses one
        # (IPv4 TCP). Two hops keep none.
        pool = 16 if one_hop_expected() else 0
        fds_ok, _ = poll(lambda: fd_count(pid) <= base_fds + pool, 10.0, 0.2)
        self.check(fds_ok, "lorelayd holds %d fds after all closed (baseline %d, pool %d)"
                   % (fd_count(pid), base_fds, pool))
        self.check(lr.daemon.alive(), "lorelayd died")
        self.verify()


if __name__ == "__main__":
    unittest.main()
