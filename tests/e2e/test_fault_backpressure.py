"""Fault 10: one end of a relayed connection stops reading. The relay must
push back through the kernel's socket buffers, never through its memory.

Upload: the guest server accepts and never reads; the host client sends
until its sends block for 2 s (bounded: 1 GiB or 20 s). Download: the host
client does not read for 3 s while the guest server tries to send 1 GiB,
then reads all of it. Peak RSS (VmHWM) of lorelayd and the agent grows by
less than 64 MiB each, and the download arrives complete."""

import socket
import time
import unittest

from lrharness import LorelayTestCase, free_ports
from lrhostile import Checks, agent_pid, hwm_kb, measure, rss_kb, stress_server

BUDGET_KB = 64 * 1024
GIB = 1 << 30


class Backpressure(Checks, LorelayTestCase):

    def _growth(self, pids, base, what):
        for name, pid in pids.items():
            peak = hwm_kb(pid)
            g = (peak - base[name]) if peak is not None else None
            measure("%s_%s_rss_growth_kib" % (what, name), g, "(peak %s KiB)" % peak)
            self.check(g is not None and g < BUDGET_KB, "%s: %s RSS grew by %s KiB (budget %d)"
                       % (what, name, g, BUDGET_KB))

    def test_stalled_reader_both_ways(self):
        lr = self.lr
        p_nr, p_src = free_ports(2)
        stress_server(lr, "nonreader", "0.0.0.0", p_nr)
        src = stress_server(lr, "source", "0.0.0.0", p_src, "size=%d" % GIB)
        lr.wait_port("0.0.0.0:%d" % p_nr, "forwarding")
        lr.wait_port("0.0.0.0:%d" % p_src, "forwarding")
        pids = {"lorelayd": lr.daemon.pid, "agent": agent_pid(lr)}
        self.assertIsNotNone(pids["agent"])
        base = {k: rss_kb(v) for k, v in pids.items()}
        measure("rss_baseline_kib", base)

        # -- upload into a server that never reads
        s = socket.create_connection(("127.0.0.1", p_nr), timeout=5)
        s.settimeout(2.0)
        buf = b"x" * (1 << 16)
        sent, t0, how = 0, time.monotonic(), "budget"
        try:
            while sent < GIB and time.monotonic() - t0 < 20:
                sent += s.send(buf)
            how = "1 GiB or 20 s"
        except socket.timeout:
            how = "blocked 2 s"
        except OSError as e:
            how = repr(e)
        measure("upload_accepted_before_block", "%.1f MiB (%s)" % (sent / 1048576, how))
        self.check(how == "blocked 2 s", "the upload into a non-reading server never blocked: "
                   "%.0f MiB accepted (%s)" % (sent / 1048576, how))
        time.sleep(0.5)
        self._growth(pids, base, "upload")
        s.close()

        # -- download to a client that does not read for 3 s
        c = socket.create_connection(("127.0.0.1", p_src), timeout=5)
        time.sleep(3.0)
        self._growth(pids, base, "download_stalled")
        c.settimeout(10)
        got, t1 = 0, time.monotonic()
        try:
            while got < GIB and time.monotonic() - t1 < 60:
                b = c.recv(1 << 20)
                if not b:
                    break
                got += len(b)
        except OSError as e:
            measure("download_error", repr(e))
        el = time.monotonic() - t1
        c.close()
        measure("download_after_stall", "%d MiB in %.2f s" % (got >> 20, el))
        self.check(got == GIB, "download delivered %d of %d bytes after the stall" % (got, GIB))
        self._growth(pids, base, "download_total")
        ev = src.wait_event("source_end", timeout=10)
        self.check(ev.get("bytes") == GIB, "guest source ended: %s" % ev)
        self.check(lr.daemon.alive(), "lorelayd died")
        self.verify()


if __name__ == "__main__":
    unittest.main()
