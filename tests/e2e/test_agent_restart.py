"""Scenario 9: lorelay-agent killed with SIGKILL inside the namespace.
lorelay-init restarts it, the host reconnects and resyncs, and forwarding
is back within 2 s. A guest server that stopped while the agent was down
must not leave a stale stand-in: the agent is frozen (SIGSTOP) before that
server stops, so only the resync can tell the host it is gone."""

import os
import signal
import sys
import time
import unittest

from lrharness import LorelayTestCase, fetch, free_ports, poll, wait_refused


class AgentRestart(LorelayTestCase):

    def _agent_pid(self):
        pids = self.lr.procs_named("lorelay-agent")
        self.assertEqual(len(pids), 1, "expected one lorelay-agent in %s, found %s" % (self.lr.netns, pids))
        return pids[0]

    def _works(self, port, expect):
        try:
            return fetch("127.0.0.1", port, timeout=1.0) == expect
        except OSError:
            return False

    def test_kill_agent(self):
        lr = self.lr
        port, = free_ports(1)
        lr.guest_server("banner", "0.0.0.0", port, "tag=a")
        lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        self.assertBanner("127.0.0.1", port, b"guest:a\n")
        old = self._agent_pid()
        self.assertTrue(lr.procs_named("lorelay-init"), "no lorelay-init in the namespace")

        os.kill(old, signal.SIGKILL)
        t0 = time.monotonic()

        def new_agent():
            pids = lr.procs_named("lorelay-agent")
            return [p for p in pids if p != old]
        pids, _ = poll(new_agent, 2.0, 0.01)
        self.assertTrue(pids, "lorelay-init did not restart the agent within 2 s")
        ok, _ = poll(lambda: self._works(port, b"guest:a\n"), 2.0, 0.01)
        lr.wait_port("0.0.0.0:%d" % port, "forwarding", timeout=2.0)
        took = time.monotonic() - t0
        print("forwarding back %.0f ms after SIGKILL of the agent" % (took * 1000), file=sys.stderr)
        self.assertTrue(ok, "forwarding not back after agent restart")
        self.assertLess(took, 2.0)
        self.assertNotEqual(self._agent_pid(), old)
        self.assertEqual(lr.guest()["state"], "connected")

    def test_no_stale_stand_in_after_resync(self):
        lr = self.lr
        pa, pb, srv_b = lr.two_banners()
        agent = self._agent_pid()

        os.kill(agent, signal.SIGSTOP)
        try:
            srv_b.stop()
            time.sleep(0.4)  # several scan intervals: a running agent would have reported it
            self.assertIsNotNone(lr.port("0.0.0.0:%d" % pb),
                                 "B vanished while the agent was frozen; the test would prove nothing")
        finally:
            os.kill(agent, signal.SIGKILL)
        t0 = time.monotonic()
        ok, _ = poll(lambda: [p for p in lr.procs_named("lorelay-agent") if p != agent], 2.0, 0.01)
        self.assertTrue(ok, "agent not restarted within 2 s")
        took = wait_refused("127.0.0.1", pb, timeout=3.0)
        self.assertIsNotNone(took, "stale stand-in for B still accepting 3 s after the agent restart")
        lr.wait_port_absent("0.0.0.0:%d" % pb, timeout=2.0)
        ok, _ = poll(lambda: self._works(pa, b"guest:a\n"), 2.0, 0.01)
        self.assertTrue(ok, "A not forwarded after resync")
        lr.wait_port("0.0.0.0:%d" % pa, "forwarding", timeout=2.0)
        took = time.monotonic() - t0
        print("resync complete %.0f ms after the agent kill" % (took * 1000), file=sys.stderr)
        self.assertLess(took, 2.0)


if __name__ == "__main__":
    unittest.main()
