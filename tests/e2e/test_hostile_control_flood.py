"""Hostile agent 1: control-stream flood. A fake agent sends 600 000 PINGs
(9.6 MB) and never reads a byte of the PONGs. lorelayd must not queue its
answers without bound: once its unsent control bytes pass controlQueueBytes
(default 1 MiB) it drops that control stream, says so in one line
(controlQueueBytes / not reading), its RSS grows by less than 32 MiB, and
it stays alive with its status endpoint answering."""

import socket
import struct
import time
import unittest

from lrhostile import HostileTestCase, fd_count, hwm_kb, log_lines, measure, rss_kb
import lrpeer as P  # tests/lrpeer.py, on the path through lrharness

N_PINGS = 600000
RSS_BUDGET_KB = 32 * 1024


class ControlFlood(HostileTestCase):

    def test_ping_flood_without_reading(self):
        fg, ctl = self.fg, self.ctl
        pid = fg.pid
        time.sleep(0.2)
        base = rss_kb(pid)
        hdr = P.frame_header(P.PING, 8)
        flood = b"".join(hdr + struct.pack(">Q", i) for i in range(N_PINGS))
        self.assertEqual(len(flood), N_PINGS * 16)

        t0 = time.monotonic()
        sent = 0
        outcome = "all sent"
        mv = memoryview(flood)
        ctl.sock.settimeout(1.0)
        deadline = t0 + 30
        while sent < len(flood):
            if time.monotonic() > deadline:
                outcome = "send stalled (30 s)"
                break
            try:
                sent += ctl.sock.send(mv[sent:sent + (1 << 16)])
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError) as e:
                outcome = "dropped by lorelayd (%s)" % type(e).__name__
                break
        took = time.monotonic() - t0
        measure("control_flood_bytes_sent", sent, "bytes of %d" % len(flood))
        measure("control_flood_outcome", outcome)
        measure("control_flood_send_seconds", "%.2f" % took)

        # Whatever lorelayd did, let it settle, then read its peak.
        time.sleep(1.0)
        alive = fg.alive()
        peak = hwm_kb(pid) if alive else None
        growth = (peak - base) if (peak is not None and base is not None) else None
        measure("lorelayd_rss_baseline_kib", base)
        measure("lorelayd_rss_peak_kib", peak)
        measure("lorelayd_rss_growth_kib", growth)
        measure("lorelayd_fds_after_flood", fd_count(pid) if alive else None)

        self.check(alive, "lorelayd died during the control flood (rc %s)" % fg.daemon.p.poll())
        if alive:
            self.check(growth is not None and growth < RSS_BUDGET_KB,
                       "lorelayd RSS grew by %s KiB during the flood (budget %d KiB)"
                       % (growth, RSS_BUDGET_KB))
            r = fg.ctl("status", "--json")
            self.check(r.returncode == 0 and '"guests"' in r.stdout,
                       "lorelayctl status --json failed after the flood: rc %d %s"
                       % (r.returncode, r.stderr.strip()))

        # The control stream must have been dropped: reading what is left
        # ends in EOF/reset soon, with at most the budget's worth of PONGs.
        how, nbytes = ctl.wait_closed(timeout=5.0, max_bytes=64 << 20)
        measure("control_flood_pong_bytes_left_to_read", nbytes)
        self.check(how in ("eof", "reset"),
                   "lorelayd kept the flooding control stream open (%s after reading %d "
                   "bytes of PONGs)" % (how, nbytes))
        lines = log_lines(fg.log(), r"controlQueueBytes|not reading")
        self.check(lines, "no log line matching controlQueueBytes|not reading")
        self.check(len(lines) <= 3, "%d log lines about the flood:\n%s"
                   % (len(lines), "\n".join(lines[:10])))
        self.verify()


if __name__ == "__main__":
    unittest.main()
