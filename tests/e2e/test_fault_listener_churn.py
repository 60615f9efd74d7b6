"""Fault 11: listener churn. A guest process does 1 000 bind/listen/close
cycles on random ports in 20000-29999 (0.0.0.0, 127.0.0.1 and [::],
about 40 open at a time) within a few seconds, then listens on a known
set of 10 ports and keeps them. Within 2 s of that final set the host
converges on exactly it: status lists those 10 forwarding and nothing else,
lorelayd listens on exactly those 10 ports, and its fd count is back to its
baseline plus the 10 stand-ins (nothing leaked by the churn)."""

import time
import unittest

from lrharness import LorelayTestCase, poll
from lrhostile import (Checks, fd_count, listening_tcp, log_lines, measure, port_free_range,
                       stress_server)

CONVERGE_S = 2.0


class ListenerChurn(Checks, LorelayTestCase):

    def test_churn_then_final_set(self):
        lr = self.lr
        pid = lr.daemon.pid
        time.sleep(0.3)
        base = fd_count(pid)
        measure("lorelayd_fds_baseline", base)
        final = sorted(port_free_range(20000, 29999, 10))
        churn = stress_server(lr, "churn", "-", 0, "n=1000", "lo=20000", "hi=29999",
                              "final=" + ",".join(map(str, final)))
        ev = churn.wait_event("final", timeout=30)
        t_final = ev["t"]
        measure("churn", "%d cycles in %.2f s" % (ev["cycles"], ev["churn_seconds"]))
        measure("standins_opened_during_churn",
                len(log_lines(lr.log(), r"lorelayd .*forwarding host .*:2\d{4}\b")))
        want_status = {"0.0.0.0:%d" % p for p in final}
        want_listen = {("127.0.0.1", p) for p in final}

        def converged():
            st = lr._status_or_none()
            g = lr.guest(st) if st else None
            if not g:
                return None
            got = {p["guest"] for p in g.get("ports", [])}
            fwd = all(p["state"] == "forwarding" for p in g.get("ports", []))
            return got == want_status and fwd and listening_tcp(pid) == want_listen
        ok, _ = poll(converged, CONVERGE_S + 3.0, 0.02)
        took = time.clock_gettime(time.CLOCK_MONOTONIC) - t_final
        measure("converged_after_final_s", "%.2f" % took if ok else "no (%.2f s)" % took)
        if not ok:
            g = lr.guest()
            extra = sorted({p["guest"] for p in g.get("ports", [])} - want_status)
            missing = sorted(want_status - {p["guest"] for p in g.get("ports", [])})
            held = listening_tcp(pid)
            self.check(False, "host did not converge on the final 10: status extra %s missing %s;"
                       " lorelayd listens on %d sockets (extra %s)" % (
                           extra[:5], missing[:5], len(held), sorted(held - want_listen)[:5]))
        else:
            self.check(took <= CONVERGE_S, "converged %.2f s after the final set (max %.1f)"
                       % (took, CONVERGE_S))
        fds, _ = poll(lambda: fd_count(pid) == base + 10, 3.0, 0.05)
        now = fd_count(pid)
        measure("lorelayd_fds_after", now, "(baseline %d + 10)" % base)
        self.check(fds, "lorelayd holds %d fds after the churn, want baseline %d + 10" % (now, base))
        self.check(lr.daemon.alive(), "lorelayd died")
        self.verify()


if __name__ == "__main__":
    unittest.main()
