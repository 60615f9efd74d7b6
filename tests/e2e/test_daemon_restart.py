"""Scenario 10: lorelayd stops (SIGTERM: clean exit, stand-ins closed) and
starts again on the same namespace. Forwarding comes back by itself, a
server that stopped meanwhile leaves no stale port, and no second init or
agent is left running in the namespace."""

import unittest

from lrharness import LorelayTestCase, wait_refused


class DaemonRestart(LorelayTestCase):

    def test_restart(self):
        lr = self.lr
        pa, pb, srv_b = lr.two_banners()

        rc = lr.stop_daemon()
        self.assertEqual(rc, 0, "lorelayd did not exit cleanly on SIGTERM (rc %s)" % rc)
        self.assertIsNotNone(wait_refused("127.0.0.1", pa, 1.0), "stand-in A survived lorelayd")
        self.assertIsNotNone(wait_refused("127.0.0.1", pb, 1.0), "stand-in B survived lorelayd")
        srv_b.stop()

        lr.start()
        lr.wait_port("0.0.0.0:%d" % pa, "forwarding")
        self.assertBanner("127.0.0.1", pa, b"guest:a\n")
        self.assertIsNone(lr.port("0.0.0.0:%d" % pb), "stale port B after restart: %s" % lr.ports())
        self.assertRefused("127.0.0.1", pb)
        self.assertEqual(len(lr.procs_named("lorelay-agent")), 1,
                         "agents in the namespace: %s" % lr.procs_named("lorelay-agent"))
        self.assertEqual(len(lr.procs_named("lorelay-init")), 1,
                         "inits in the namespace: %s" % lr.procs_named("lorelay-init"))


if __name__ == "__main__":
    unittest.main()
