"""A host service restarts while a guest waits for its port (issue 18,
finding 4).

A host service holds 127.0.0.1:P; the guest (a fake agent) listens on P,
so the port is in "conflict". The service closes its socket and binds it
again 2 s later, as a restart does: lorelayd must not have taken the port
in between (conflictGraceSeconds, default 10 s), so the restarted service
binds, and its clients reach it, not the guest. When the service goes for
good, lorelayd takes the port only once it stayed free for the grace, and
says which guest took it. With remapOnConflict the guest gets another
port at once, and moves back only after the grace."""

import socket
import time
import unittest

from lrhostile import HostileTestCase, log_lines, measure
from lrharness import free_port, poll
import lrpeer


def host_service(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def reaches_host_service(srv, port):
    """A client of 127.0.0.1:P is accepted by srv (the host service)."""
    c = socket.create_connection(("127.0.0.1", port), timeout=2.0)
    srv.settimeout(2.0)
    try:
        a, _ = srv.accept()
        a.close()
        return True
    except socket.timeout:
        return False
    finally:
        c.close()


class GraceBase(HostileTestCase):

    def state(self, port):
        p = self.fg.ports().get("127.0.0.1:%d" % port)
        return p

    def wait_state(self, port, want, timeout):
        return poll(lambda: (lambda p: p if p and p.get("state") == want else None)(
            self.state(port)), timeout, 0.05)

    def restart_within_grace(self, port, srv):
        srv.close()
        t_closed = time.monotonic()
        time.sleep(2.0)
        try:
            srv = host_service(port)
            rebound = True
        except OSError as e:
            rebound = False
            measure("restarted host service's bind", "failed: %s" % e)
        measure("host service rebind after 2 s", "ok" if rebound else "EADDRINUSE")
        self.check(rebound, "the restarted host service could not bind its port: lorelayd took "
                   "it %.1f s after it closed" % (time.monotonic() - t_closed))
        if rebound:
            self.check(reaches_host_service(srv, port),
                       "a client of the restarted service did not reach it")
            time.sleep(1.5)  # the restarted service runs a while (past a retry)
            self.check(reaches_host_service(srv, port),
                       "a client of the restarted service did not reach it 1.5 s later")
        return srv if rebound else None


class PortGrace(GraceBase):

    def test_restart_keeps_port_then_grace(self):
        port = free_port()
        srv = host_service(port)
        self.ctl.send(lrpeer.listener_frame("127.0.0.1", port))
        self.assertIsNotNone(self.wait_state(port, "conflict", 5.0)[0],
                             "no conflict: %r" % self.fg.ports())
        srv = self.restart_within_grace(port, srv)
        self.verify()
        self.assertEqual(self.state(port)["state"], "conflict")
        srv.close()
        t0 = time.monotonic()
        p, _ = self.wait_state(port, "forwarding", 20.0)
        took = time.monotonic() - t0
        measure("port taken after the host service left", "%.2f" % took, "s")
        self.assertIsNotNone(p, "never forwarded after the service left")
        self.check(took >= 9.5, "taken %.2f s after the service left (grace 10 s)" % took)
        self.check(took < 14.0, "taken only %.2f s after the service left" % took)
        lines = log_lines(self.fg.log(), r"stayed free for 10 s.*taken by guest " + self.fg.name)
        self.check(len(lines) == 1, "no single 'taken by guest' line: %r" % lines)
        self.verify()


class PortGraceRemap(GraceBase):
    CONFIG = "[lorelay]\nremapOnConflict = true\nconflictGraceSeconds = 3\nconflictRetryMs = 200\n"

    def test_remap_at_once_moves_back_after_grace(self):
        port = free_port()
        srv = host_service(port)
        t0 = time.monotonic()
        self.ctl.send(lrpeer.listener_frame("127.0.0.1", port))
        p, _ = self.wait_state(port, "remapped", 5.0)
        measure("remapped after", "%.2f" % (time.monotonic() - t0), "s")
        self.assertIsNotNone(p, "not remapped at once: %r" % self.fg.ports())
        srv = self.restart_within_grace(port, srv)
        self.verify()
        srv.close()
        t0 = time.monotonic()
        p, _ = self.wait_state(port, "forwarding", 10.0)
        took = time.monotonic() - t0
        measure("moved back after the host service left", "%.2f" % took, "s")
        self.assertIsNotNone(p, "never moved back")
        self.check(took >= 2.8, "moved back %.2f s after the service left (grace 3 s)" % took)
        self.verify()


if __name__ == "__main__":
    unittest.main()
