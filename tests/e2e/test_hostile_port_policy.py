"""Hostile agent 3: which guest ports the host may mirror. A guest must not
make the host listen wherever it likes: forwardPorts (default 1024-65535)
bounds the ports, and port 0 or a port the host publishes itself
(reversePorts) is never mirrored. A refused listener shows in status as
"state":"denied" with a "reason" naming the port or the rule, and has no
stand-in (checked on the sockets lorelayd holds, not only on status). A
port the policy allows still forwards."""

import re
import unittest

from lrhostile import (FakeGuestDaemon, HostileTestCase, echo_through, listening_tcp, measure,
                       port_free_range)
from lrharness import free_ports, poll
import lrpeer as P  # tests/lrpeer.py, on the path through lrharness


class PortPolicy(HostileTestCase):
    START = False

    def _run(self, config):
        self.fg.cleanup()
        self.fg = FakeGuestDaemon(config=config)
        self.fg.start()
        self.ctl = self.fg.control()
        self.ctl.start_reader()
        self.fg.wait_connected()
        return self.fg

    def _denied(self, ports, guest, why_re):
        p = ports.get(guest)
        if not self.check(p is not None, "%s missing from status (want state denied)" % guest):
            return
        if not self.check(p.get("state") == "denied", "%s: state %r, want \"denied\" (%s)"
                          % (guest, p.get("state"), p)):
            return
        reason = str(p.get("reason", ""))
        self.check(re.search(why_re, reason, re.I),
                   "%s: reason %r does not match %r" % (guest, reason, why_re))

    def _listen_ports(self):
        return sorted(port for _, port in listening_tcp(self.fg.pid))

    def test_default_policy(self):
        allowed, rev = free_ports(2)
        fg = self._run("[lorelay]\nreversePorts = %d\n" % rev)
        P.FakeAgent.send_listing(self.ctl, [("0.0.0.0", 22), ("0.0.0.0", 0), ("0.0.0.0", rev),
                                            ("0.0.0.0", allowed)])
        works, took = poll(lambda: echo_through("127.0.0.1", allowed), 5.0, 0.05)
        measure("allowed_port_forwarding_after_s", "%.2f" % took)
        self.check(works, "allowed port %d (inside forwardPorts) does not forward" % allowed)
        # The listing is one message: once each refused port shows "denied",
        # the host has acted on all of it, so a wrong stand-in would be open.
        refused = ["0.0.0.0:22", "0.0.0.0:0", "0.0.0.0:%d" % rev]
        poll(lambda: all((fg.ports().get(g) or {}).get("state") == "denied" for g in refused),
             5.0, 0.05)
        held = self._listen_ports()
        measure("lorelayd_listening_ports", held)
        self.check(22 not in held, "lorelayd listens on port 22 for a guest listener")
        self.check(0 not in held and all(p == allowed for p in held),
                   "lorelayd listens on %s; only %d is allowed (port 0 and reversePorts %d are "
                   "not)" % (held, allowed, rev))
        ports = fg.ports()
        self._denied(ports, "0.0.0.0:22", r"\b22\b|forwardPorts")
        self._denied(ports, "0.0.0.0:0", r"\b0\b|port 0|forwardPorts|invalid")
        self._denied(ports, "0.0.0.0:%d" % rev, r"reversePorts|\b%d\b" % rev)
        p = ports.get("0.0.0.0:%d" % allowed)
        self.check(p and p.get("state") == "forwarding", "allowed port status: %s" % p)
        self.check(fg.alive(), "lorelayd died")
        self.verify()

    def test_forward_ports_range(self):
        base, = port_free_range(13000, 31000 - 11, 1)
        # forwardPorts = B-(B+10), like "30000-30010", at a random free base
        fg = self._run("[lorelay]\nforwardPorts = %d-%d\n" % (base, base + 10))
        inside, outside = base + 5, base + 11
        P.FakeAgent.send_listing(self.ctl, [("0.0.0.0", outside), ("0.0.0.0", inside)])
        works, _ = poll(lambda: echo_through("127.0.0.1", inside), 5.0, 0.05)
        self.check(works, "port %d inside forwardPorts %d-%d does not forward"
                   % (inside, base, base + 10))
        poll(lambda: (fg.ports().get("0.0.0.0:%d" % outside) or {}).get("state") == "denied",
             5.0, 0.05)  # the listing is one message: all of it has been acted on
        held = self._listen_ports()
        self.check(outside not in held, "lorelayd listens on %d, outside forwardPorts %d-%d"
                   % (outside, base, base + 10))
        self._denied(fg.ports(), "0.0.0.0:%d" % outside, r"\b%d\b|forwardPorts" % outside)
        self.check(not re.search(r"unknown key.*forwardPorts", fg.log(), re.I),
                   "lorelayd does not know the forwardPorts key")
        self.verify()


if __name__ == "__main__":
    unittest.main()
