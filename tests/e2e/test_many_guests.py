"""20 network namespaces served by one lorelayd (--netns repeated 20 times).

Every guest connects and gets its own status entry; a server in each is
forwarded (each on its own host port) and answers with its own banner.
Then the daemon sits with 20 idle guests for a while and the test reports
its resident memory and CPU use (the figures the closing note of the
many-guests work quotes), bounded so a regression fails: under 64 MiB RSS
and under 5 % of one CPU while idle.
"""

import os
import sys
import time
import unittest

from lrharness import LorelayTestCase, MultiLorelay, free_ports

N = 20
IDLE_S = 10.0


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class TwentyGuests(LorelayTestCase):
    START = False

    def test_twenty_namespaces(self):
        self.lr.cleanup()
        lr = self.lr = MultiLorelay(N, tag="lr20")
        t0 = time.monotonic()
        lr.start(wait=False, log_level="info")
        lr.wait_guests(timeout=60.0)
        print("%d guests connected %.2f s after start" % (N, time.monotonic() - t0),
              file=sys.stderr)
        st = lr.status()
        self.assertEqual(sorted(g["name"] for g in st["guests"]), sorted(lr.names))
        pid = lr.daemon.pid

        # Idle: no listener in any guest.
        time.sleep(1.0)
        hz = os.sysconf("SC_CLK_TCK")
        c0, w0 = cpu_ticks(pid), time.monotonic()
        time.sleep(IDLE_S)
        c1, w1 = cpu_ticks(pid), time.monotonic()
        idle_cpu = 100.0 * (c1 - c0) / hz / (w1 - w0)
        idle_rss = rss_kib(pid)
        print("lorelayd with %d idle guests: RSS %d KiB, CPU %.2f %% of one core "
              "(%d ticks of 1/%d s in %.0f s)"
              % (N, idle_rss, idle_cpu, c1 - c0, hz, w1 - w0), file=sys.stderr)
        # For scale: the guest side of the same 20 guests (not bounded here).
        agents = [p for ns in lr.names for p in lr.procs_named("lorelay-agent", ns)]
        inits = [p for ns in lr.names for p in lr.procs_named("lorelay-init", ns)]
        print("guest side: %d lorelay-agent, RSS %d KiB in all; %d lorelay-init, RSS %d KiB"
              % (len(agents), sum(rss_kib(p) for p in agents), len(inits),
                 sum(rss_kib(p) for p in inits)), file=sys.stderr)

        # One server per guest, each on its own port.
        ports = free_ports(N)
        for i, (ns, p) in enumerate(zip(lr.names, ports)):
            lr.guest_server("banner", "0.0.0.0", p, "tag=g%d" % i, ns=ns)
        for i, (ns, p) in enumerate(zip(lr.names, ports)):
            lr.wait_port("0.0.0.0:%d" % p, "forwarding", name=ns, timeout=5.0)
            self.assertBanner("127.0.0.1", p, ("guest:g%d\n" % i).encode())
        busy_rss = rss_kib(pid)
        print("lorelayd with %d guests, one forwarded port each: RSS %d KiB"
              % (N, busy_rss), file=sys.stderr)

        self.assertLess(idle_rss, 64 * 1024, "idle RSS %d KiB" % idle_rss)
        self.assertLess(idle_cpu, 5.0, "idle CPU %.2f %%" % idle_cpu)

        # A clean stop takes every guest's lorelay-init and agent with it.
        self.assertEqual(lr.stop_daemon(timeout=10.0), 0)
        left = [ns for ns in lr.names
                if lr.procs_named("lorelay-init", ns) or lr.procs_named("lorelay-agent", ns)]
        self.assertEqual(left, [], "processes left in namespaces after lorelayd stopped")


if __name__ == "__main__":
    unittest.main()
