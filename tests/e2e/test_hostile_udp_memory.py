"""A local user floods a UDP stand-in while the guest's agent does not
answer OPEN (issue 18, finding 1).

A fake agent that takes every UDP flow's stream and never answers, and a
sender running as uid 65534 (nobody) that sends 64 datagrams of 65 507
bytes from each of 150 source ports: 150 flows whose datagrams all wait
for OPEN_RESULT. The queues are bounded in bytes (per flow, per port, per
guest), so lorelayd's resident memory must stay under 64 MiB above its
baseline, the drops must be counted and logged on a few lines, and the
daemon must still answer status afterwards."""

import os
import subprocess
import sys
import time
import unittest

from lrhostile import HostileTestCase, hwm_kb, log_lines, measure, rss_kb
from lrharness import free_port, poll
import lrpeer

NOBODY = 65534


SENDER = r"""
import os, socket, sys, time
assert os.getuid() == 65534 and os.getgid() == 65534
ports = [int(p) for p in sys.argv[1].split(",")]
nsrc, count, size = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
payload = b"u" * size
socks = []
sent = 0
for i in range(nsrc):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    socks.append(s)  # kept open: each source port stays one flow
    port = ports[i % len(ports)]
    for _ in range(count):
        try:
            s.sendto(payload, ("127.0.0.1", port))
            sent += 1
        except OSError:
            pass
    time.sleep(0.004)  # lets lorelayd read this port's burst
print(sent, flush=True)
"""


def run_as_nobody(ports, nsrc, count, size):
    """The flood from a process running as uid/gid 65534 (setpriv): from
    each of nsrc source ports, count datagrams of size bytes, to each
    stand-in port in turn. A new interpreter rather than a fork of this
    threaded one; the system's python, since the test's own may sit where
    nobody cannot read. Returns the datagrams it sent."""
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    out = subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY),
                          "--clear-groups", py, "-c", SENDER, ",".join(map(str, ports)),
                          str(nsrc), str(count), str(size)],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError("the uid 65534 sender failed: %s" % out.stderr[-2000:])
    return int(out.stdout.strip())


class UdpFloodStalledAgent(HostileTestCase):
    AGENT = {"data": "hang"}  # takes each OPEN, never answers it

    def flood(self, nports, bound_words):
        ports = [free_port() for _ in range(nports)]
        for port in ports:
            self.ctl.send(lrpeer.frame(lrpeer.LISTENER_ADD, lrpeer.enc_listener(
                "0.0.0.0", port, flags=lrpeer.LISTENER_UDP)))

        def forwarding():
            return all((self.fg.ports().get("0.0.0.0:%d" % p) or {}).get("state") ==
                       "forwarding" for p in ports) or None
        self.assertIsNotNone(poll(forwarding, 5.0, 0.02)[0], "UDP listeners not forwarded")
        port = ports[0]
        pid = self.fg.pid
        base = rss_kb(pid)
        measure("lorelayd RSS before", base, "KiB")
        t0 = time.monotonic()
        sent = run_as_nobody(ports, 150, 64, 65507)
        measure("sender (uid 65534)", "%d datagrams in %.2f s" % (sent, time.monotonic() - t0))
        self.assertGreater(sent, 0)
        during = rss_kb(pid)
        # The flows fail at the 5 s handshake bound; their bytes go with them.
        time.sleep(6.5)
        after = rss_kb(pid)
        peak = hwm_kb(pid)
        measure("lorelayd RSS right after the flood", during, "KiB")
        measure("lorelayd RSS after the flows failed", after, "KiB")
        measure("lorelayd peak RSS (VmHWM)", peak, "KiB")
        measure("lorelayd peak above baseline", (peak - base) // 1024, "MiB")
        self.assertTrue(self.fg.alive(), "lorelayd died")
        p = self.fg.ports().get("0.0.0.0:%d" % port)
        measure("datagrams dropped (status, first port)", p and p.get("drops"))
        lines = log_lines(self.fg.log(), r"queue")
        for l in lines[:2]:
            print("  " + l)
        self.check(any(bound_words in l for l in lines), "no line names %r" % bound_words)
        measure("queue log lines", len(lines))
        self.check(peak - base < 64 * 1024,
                   "peak RSS %d KiB above a %d KiB baseline (bound: 64 MiB)" % (peak - base, base))
        self.check(after - base < 64 * 1024, "RSS after %d KiB (baseline %d)" % (after, base))
        self.check(p is not None and p.get("drops", 0) > 0, "no drops counted: %r" % (p,))
        self.check(1 <= len(lines) <= 5, "queue lines: %d %r" % (len(lines), lines[:6]))
        self.verify()

    def test_flood_from_nobody(self):
        """The issue's case: 150 flows on one stand-in (the port's bound)."""
        self.flood(1, "the port's UDP queues (4 MiB)")

    def test_flood_over_eight_ports(self):
        """The same flood spread over 8 stand-ins (the guest's bound)."""
        self.flood(8, "the guest's UDP queues (16 MiB)")


if __name__ == "__main__":
    unittest.main()
