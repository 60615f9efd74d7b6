"""The INI config reaches the forwarding decisions: ignorePorts keeps a
port off the host (status may list it as "ignored", never "forwarding"),
and ipv6=false forwards a dual-stack listener to 127.0.0.1 only."""

import unittest

from lrharness import LorelayTestCase, free_ports, Lorelay


class IgnoredPort(LorelayTestCase):
    START = False

    def test_ignore_and_ipv6_off(self):
        p_ign, p_dual, p_ok = free_ports(3)
        self.lr.cleanup()  # replace the default-config instance
        self.lr = Lorelay(config="[lorelay]\nignorePorts=%d\nipv6=false\n" % p_ign)
        self.lr.start()
        lr = self.lr
        lr.guest_server("banner", "0.0.0.0", p_ign, "tag=ign")
        lr.guest_server("banner", "::", p_dual, "v6only=0", "tag=dual")
        lr.guest_server("banner", "0.0.0.0", p_ok, "tag=ok")
        lr.wait_port("0.0.0.0:%d" % p_ok, "forwarding")
        p, _ = lr.wait_port("[::]:%d" % p_dual, "forwarding")
        self.assertEqual(p["host"], ["127.0.0.1:%d" % p_dual])
        self.assertBanner("127.0.0.1", p_dual, b"guest:dual\n")
        self.assertRefused("::1", p_dual)
        ign = lr.port("0.0.0.0:%d" % p_ign)
        if ign is not None:
            self.assertEqual(ign["state"], "ignored")
            self.assertEqual(ign["host"], [])
        self.assertRefused("127.0.0.1", p_ign)


if __name__ == "__main__":
    unittest.main()
