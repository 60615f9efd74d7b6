"""Event-driven UDP detection (the eBPF cgroup hooks, guest/lr_bpfwatch.h)
keeps to the guest: a UDP socket bound in the guest wakes the agent (its
debug log shows the trigger line, and the port is forwarded and dropped
again without waiting for a poll), while UDP sockets bound and closed in
other network namespaces, the host's (this test's own process) and one the
test creates, never reach the agent (no trigger line for their ports).

The hooks are attached to the cgroup v2 root, so they see every process on
the machine: only the kernel-side namespace filter keeps the rest out. An
agent whose hooks did not attach (its log says why) cannot show any of
this: a failure in CI, a skip outside (tests/lrci.py).

And on either path, a UDP-only scan keeps the TCP listeners it did not
dump."""

import socket
import subprocess
import sys
import time
import unittest

from lrharness import (PYTHON, GUESTSRV, LorelayTestCase, free_port, poll, skip_or_fail)

# A UDP socket bound to 0.0.0.0:PORT (lo is down in a fresh namespace),
# held for a moment, then closed.
BIND_AND_CLOSE = ("import socket, sys, time\n"
                  "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  "s.bind(('0.0.0.0', int(sys.argv[1])))\n"
                  "time.sleep(0.1)\n"
                  "s.close()\n")


def trigger_line(port, what):
    return "eBPF trigger: UDP IPv4 port %d %s" % (port, what)


class UdpDetectionNamespace(LorelayTestCase):

    def _require_udp_hooks(self):
        def said():
            log = self.lr.log()
            if "UDP is event-driven" in log:
                return "ebpf"
            if "listener detection: UDP sockets are polled" in log or "polling every" in log:
                return "poll"
            return None
        how, _ = poll(said, 5.0, 0.02)
        if how != "ebpf":
            lines = [l for l in self.lr.log().splitlines() if "listener detection" in l]
            skip_or_fail(self, "the agent's UDP detection is not event-driven: %s"
                         % ("; ".join(lines) or "no 'listener detection' line in the log"))

    def test_guest_bind_wakes_agent_other_namespaces_do_not(self):
        self._require_udp_hooks()
        host_port, other_port, guest_port = free_port(), free_port(), free_port()
        while len({host_port, other_port, guest_port}) < 3:
            other_port, guest_port = free_port(), free_port()

        # The host's namespace: this process.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", host_port))
        time.sleep(0.1)
        s.close()
        # A namespace of its own (neither the host's nor the guest's).
        r = subprocess.run(["unshare", "--net", PYTHON, "-c", BIND_AND_CLOSE, str(other_port)],
                           capture_output=True, timeout=10)
        if r.returncode != 0:
            skip_or_fail(self, "cannot run a UDP socket in a new network namespace (unshare "
                         "--net): %s" % r.stderr.decode(errors="replace").strip())

        # The guest: bound, forwarded, closed, gone; each step announced.
        helper = self.lr.spawn([PYTHON, "-u", GUESTSRV, "detect", "-", "0"], "detect", stdin=True)
        helper.wait_event("ready")
        helper.send("bind 0.0.0.0 %d" % guest_port)
        helper.wait_event("listening")
        _, took = self.lr.wait_port("0.0.0.0:%d" % guest_port, "forwarding", timeout=3.0,
                                    pred=lambda p: p.get("proto") == "udp")
        print("guest UDP port %d forwarding after %.1f ms" % (guest_port, took * 1000),
              file=sys.stderr)
        self.assertIn(trigger_line(guest_port, "bound"), self.lr.log(),
                      "no eBPF trigger line for the guest's bind()")
        helper.send("close")
        helper.wait_event("closed")
        self.lr.wait_port_absent("0.0.0.0:%d" % guest_port, timeout=3.0)
        self.assertIn(trigger_line(guest_port, "released"), self.lr.log(),
                      "no eBPF trigger line for the guest's close()")
        helper.send("quit")

        # The ring buffer is one queue, read in order: the other namespaces'
        # sockets came and went before the guest's, so their records would
        # be in the log by now.
        log = self.lr.log()
        for port, where in ((host_port, "the host's namespace"), (other_port, "another namespace")):
            for what in ("bound", "released"):
                self.assertNotIn(trigger_line(port, what), log,
                                 "a UDP socket in %s reached the agent" % where)

    def test_udp_scans_keep_tcp_listeners(self):
        """A UDP-only scan (a UDP event's, or the UDP poll's) keeps the TCP
        part of the last full dump: a TCP listener sorting after the new UDP
        socket must not be reported gone when the UDP socket comes or goes.
        Either detection path: no eBPF needed."""
        udp_port = free_port()
        tcp_port = free_port(exclude=(udp_port,))
        if tcp_port < udp_port:
            udp_port, tcp_port = tcp_port, udp_port
        helper = self.lr.spawn([PYTHON, "-u", GUESTSRV, "detect", "-", "0"], "tcp", stdin=True)
        helper.wait_event("ready")
        helper.send("listen 0.0.0.0 %d" % tcp_port)
        helper.wait_event("listening")
        self.lr.wait_port("0.0.0.0:%d" % tcp_port, "forwarding", timeout=3.0)
        udp = self.lr.spawn([PYTHON, "-u", GUESTSRV, "detect", "-", "0"], "udp", stdin=True)
        udp.wait_event("ready")
        for i in range(3):
            udp.send("bind 0.0.0.0 %d" % udp_port)
            udp.wait_event("listening", count=i + 1)
            self.lr.wait_port("0.0.0.0:%d" % udp_port, "forwarding", timeout=3.0,
                              pred=lambda p: p.get("proto") == "udp")
            udp.send("close")
            udp.wait_event("closed", count=i + 1)
            self.lr.wait_port_absent("0.0.0.0:%d" % udp_port, timeout=3.0)
        self.lr.settle()  # every scan so far, UDP-only ones included, has reached the host
        gone = [l for l in self.lr.log().splitlines()
                if "listener gone: 0.0.0.0:%d" % tcp_port in l]
        self.assertEqual(gone, [], "the TCP listener was reported gone by a UDP scan")
        self.lr.wait_port("0.0.0.0:%d" % tcp_port, "forwarding", timeout=0.1)
        helper.send("quit")
        udp.send("quit")


if __name__ == "__main__":
    unittest.main()
