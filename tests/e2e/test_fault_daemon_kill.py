"""Fault 9: lorelayd dies or is replaced abruptly.

SIGKILL: no shutdown code runs. Its stand-ins go with the process, its
lorelay-init follows (PR_SET_PDEATHSIG), and a restart on the same
namespace (stale agent socket, stale status socket) forwards again by
itself, with no stand-in for a guest server that stopped meanwhile and one
init + one agent in the namespace.

Overlapping restart: the new lorelayd starts right after SIGTERM reached the
old one, while the old is still shutting down. A variant freezes the old
lorelay-init first (SIGSTOP), so the old lorelayd's shutdown waits its whole
grace for it before killing it: a wide overlap. The new one may refuse to
start while the old still runs (it is then started again, as a supervisor
would, at most every 0.2 s), but once both have settled: forwarding works,
no stale stand-in, one init + one agent, and the old instance's shutdown
did not remove anything the new one uses (agent socket, status socket)."""

import os
import signal
import subprocess
import time
import unittest

from lrharness import LorelayTestCase, fetch, poll, wait_refused
from lrhostile import Checks, measure


class DaemonKill(Checks, LorelayTestCase):

    def _works(self, port, tag):
        try:
            return fetch("127.0.0.1", port, timeout=1.0) == ("guest:%s\n" % tag).encode()
        except OSError:
            return False

    def _settled_checks(self, pa, pb, what):
        lr = self.lr
        ok, took = poll(lambda: self._works(pa, "a"), 10.0, 0.05)
        measure("%s_forwarding_back_s" % what, "%.2f" % took)
        self.check(ok, "%s: A not forwarded within 10 s" % what)
        time.sleep(0.5)
        st = lr._status_or_none()
        g = lr.guest(st) if st else None
        self.check(g and g.get("state") == "connected", "%s: guest not connected: %s" % (what, g))
        ports = [p["guest"] for p in (g or {}).get("ports", [])]
        self.check("0.0.0.0:%d" % pb not in ports, "%s: stale port B in status: %s" % (what, ports))
        self.check(wait_refused("127.0.0.1", pb, 2.0) is not None,
                   "%s: stale stand-in for B still accepts" % what)
        inits, agents = lr.procs_named("lorelay-init"), lr.procs_named("lorelay-agent")
        measure("%s_inits_agents" % what, "%d init, %d agent" % (len(inits), len(agents)))
        self.check(len(inits) == 1 and len(agents) == 1, "%s: %d lorelay-init, %d lorelay-agent "
                   "in the namespace (want 1 and 1)" % (what, len(inits), len(agents)))
        self.check(os.path.exists(lr.agent_socket), "%s: agent socket gone" % what)
        self.check(os.path.exists(lr.sock), "%s: status socket gone" % what)

    def test_sigkill_then_restart(self):
        lr = self.lr
        pa, pb, srv_b = self.lr.two_banners()
        old = lr.daemon
        os.kill(old.pid, signal.SIGKILL)
        old.p.wait(5)
        t0 = time.monotonic()
        gone, _ = poll(lambda: not lr.procs_named("lorelay-agent")
                       and not lr.procs_named("lorelay-init"), 5.0, 0.05)
        measure("init_agent_gone_after_sigkill_s", "%.2f" % (time.monotonic() - t0))
        self.check(gone, "lorelay-init/agent survive a SIGKILLed lorelayd: %s %s"
                   % (lr.procs_named("lorelay-init"), lr.procs_named("lorelay-agent")))
        self.check(wait_refused("127.0.0.1", pa, 1.0) is not None, "stand-in A outlived lorelayd")
        srv_b.stop()
        lr.daemon = None
        lr.start()
        self._settled_checks(pa, pb, "after_sigkill")
        self.verify()

    def test_restart_overlapping_shutdown(self):
        self._overlap(freeze_init=False, what="after_overlap")

    def test_restart_overlapping_slow_shutdown(self):
        """The old lorelay-init is frozen (SIGSTOP), so the old lorelayd's
        shutdown waits its full grace for it: a wide overlap."""
        self._overlap(freeze_init=True, what="after_slow_overlap")

    def _overlap(self, freeze_init, what):
        lr = self.lr
        pa, pb, srv_b = self.lr.two_banners()
        srv_b.stop()
        lr.wait_port_absent("0.0.0.0:%d" % pb, timeout=3.0)
        old = lr.daemon
        lr.procs.append(old)  # cleanup stops it whatever happens
        if freeze_init:
            for pid in lr.procs_named("lorelay-init"):
                os.kill(pid, signal.SIGSTOP)
        os.kill(old.pid, signal.SIGTERM)
        lr.daemon = None
        attempts, refused = 0, []
        t0 = time.monotonic()
        while True:
            attempts += 1
            old_alive_at_start = old.alive()
            lr.start(wait=False)
            new = lr.daemon

            def outcome():
                if new.p.poll() is not None:
                    return "exited"
                # Until the old daemon is gone, the status socket may still
                # be its: a "connected" from there says nothing of the new one.
                if old.alive():
                    return None
                st = lr._status_or_none()
                g = lr.guest(st) if st else None
                if g and g.get("state") == "connected" and new.alive():
                    return "connected"
                return None
            how, _ = poll(outcome, 10.0, 0.05)
            if how == "connected":
                break
            refused.append({"rc": new.p.poll(), "old_alive_at_start": old_alive_at_start,
                            "how": how or "neither exited nor connected in 10 s"})
            new.stop()
            lr.procs.append(new)
            lr.daemon = None
            if time.monotonic() - t0 > 15:
                break
            time.sleep(0.2)
        measure("%s_start_attempts" % what, "%d (refused: %s)" % (attempts, refused))
        self.check(lr.daemon is not None, "no new lorelayd took over within 15 s")
        self.check(all(r["old_alive_at_start"] for r in refused),
                   "a new lorelayd refused to start although the old one had exited: %s" % refused)
        try:
            old_rc = old.p.wait(10)
        except subprocess.TimeoutExpired:
            old_rc = None
        measure("%s_old_lorelayd_exit" % what, "rc %s" % old_rc)
        self.check(old_rc == 0, "old lorelayd did not exit cleanly on SIGTERM (%s)" % old_rc)
        if lr.daemon is not None:
            lr.wait_connected(10.0)
            time.sleep(1.0)  # the old one's late shutdown steps, if any, are done
            self._settled_checks(pa, pb, what)
            self.check(lr.daemon.alive(), "new lorelayd died")
        self.verify()


if __name__ == "__main__":
    unittest.main()
