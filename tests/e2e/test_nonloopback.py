"""Scenario 4: listeners on a specific non-loopback address (127.0.0.2, and
an address this test adds (on a dummy interface, or on lo) in its own namespace) are
not forwarded. A control listener on 0.0.0.0 is started last: once it shows
up, the agent has scanned after the others were listening, so their absence
is evidence, not a race; lr.settle() then waits until everything the
agent saw has reached the host."""

import unittest

from lrharness import LorelayTestCase, free_ports


class NonLoopback(LorelayTestCase):

    def test_specific_addresses_not_forwarded(self):
        lr = self.lr
        # A dummy interface where the kernel has the module; otherwise the
        # same documentation address (TEST-NET-1) on the namespace's lo.
        if lr.netns_exec("ip", "link", "add", "lrdummy0", "type", "dummy", check=False).returncode == 0:
            lr.netns_exec("ip", "addr", "add", "192.0.2.1/24", "dev", "lrdummy0")
            lr.netns_exec("ip", "link", "set", "lrdummy0", "up")
        else:
            lr.netns_exec("ip", "addr", "add", "192.0.2.1/32", "dev", "lo")
        p_lo2, p_dummy, p_ctl = free_ports(3)
        lr.guest_server("banner", "127.0.0.2", p_lo2, "tag=lo2")
        lr.guest_server("banner", "192.0.2.1", p_dummy, "tag=dummy")
        lr.guest_server("banner", "0.0.0.0", p_ctl, "tag=ctl")
        lr.wait_port("0.0.0.0:%d" % p_ctl, "forwarding")
        self.assertBanner("127.0.0.1", p_ctl, b"guest:ctl\n")
        lr.settle()  # every scan that saw the three listeners has reached the host
        guests = [p["guest"] for p in lr.ports()]
        self.assertNotIn("127.0.0.2:%d" % p_lo2, guests)
        self.assertNotIn("192.0.2.1:%d" % p_dummy, guests)
        for p in lr.ports():
            self.assertNotIn(p["guest"].rsplit(":", 1)[1], (str(p_lo2), str(p_dummy)),
                             "non-loopback listener appeared in status: %s" % p)
        self.assertRefused("127.0.0.1", p_lo2)
        self.assertRefused("127.0.0.1", p_dummy)
        self.assertRefused("::1", p_lo2)


if __name__ == "__main__":
    unittest.main()
