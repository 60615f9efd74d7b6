"""Hostile local operator 7: a second `lorelayd --netns NAME` for a NAME a
running lorelayd already serves (its own status socket, so only the
namespace is shared). The second must exit non-zero within a few seconds
with a one-line error naming NAME and saying "already"; it must not touch
the first one's agent: the first keeps forwarding while the second runs,
and after the second is gone, the first's agent socket still exists and
forwarding still works 2 s later."""

import os
import re
import signal
import subprocess
import time
import unittest

from lrharness import LorelayTestCase, Proc, binary, fetch, free_port
from lrhostile import Checks, measure


class SecondDaemon(Checks, LorelayTestCase):

    def _works(self, port):
        try:
            return fetch("127.0.0.1", port, timeout=2.0) == b"guest:one\n"
        except OSError:
            return False

    def test_second_daemon_same_netns(self):
        lr = self.lr
        port = free_port()
        lr.guest_server("banner", "0.0.0.0", port, "tag=one")
        lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        agent_sock = lr.agent_socket
        ino_before = os.stat(agent_sock).st_ino
        inits_before = sorted(lr.procs_named("lorelay-init"))

        sock2 = os.path.join(lr.tmpdir, "second.sock")
        second = Proc([binary("lorelayd"), "--netns", lr.netns, "--socket", sock2],
                      os.path.join(lr.tmpdir, "second.log"))
        lr.procs.append(second)
        t0 = time.monotonic()
        try:
            rc = second.p.wait(5.0)
        except subprocess.TimeoutExpired:
            rc = None
        took = time.monotonic() - t0
        out = second.output()
        measure("second_daemon_exit", "rc %s after %.2f s" % (rc, took))
        lines = [l for l in out.splitlines() if l.strip()]
        if self.check(rc is not None, "second lorelayd --netns %s still running after 5 s"
                      % lr.netns):
            self.check(rc != 0, "second lorelayd exited with 0, want non-zero")
        named = [l for l in lines if lr.netns in l and re.search(r"already", l, re.I)]
        self.check(named, "no line naming %s and 'already' in the second's output:\n%s"
                   % (lr.netns, out[-2000:]))
        errors = [l for l in lines if re.search(r"\berror\b", l, re.I)]
        self.check(len(errors) <= 1, "the second's refusal is not one line:\n%s" % "\n".join(errors))

        self.check(self._works(port), "first lorelayd stopped forwarding while the second ran")
        if second.alive():
            second.stop(signal.SIGTERM, timeout=5.0)
        time.sleep(2.0)
        exists = os.path.exists(agent_sock)
        self.check(exists, "agent socket %s gone after the second lorelayd stopped" % agent_sock)
        if exists:
            self.check(os.stat(agent_sock).st_ino == ino_before,
                       "agent socket %s was replaced by the second lorelayd" % agent_sock)
        self.check(sorted(lr.procs_named("lorelay-init")) == inits_before,
                   "lorelay-init processes changed: %s -> %s"
                   % (inits_before, sorted(lr.procs_named("lorelay-init"))))
        self.check(self._works(port), "first lorelayd no longer forwards 2 s after the second "
                   "stopped")
        st = lr.status()
        g = lr.guest(st)
        self.check(g and g.get("state") == "connected", "first lorelayd's guest: %s" % g)
        self.check(lr.daemon.alive(), "first lorelayd died")
        self.verify()


if __name__ == "__main__":
    unittest.main()
