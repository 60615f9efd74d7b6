"""Hostile agent 5: listener flood. The fake agent reports 5 000 distinct
ports as [::] dual-stack listeners, each of which maps to two host
sockets (127.0.0.1:P and [::1]:P). lorelayd holds at most maxStandins
(default 4096) listening sockets, counted from the sockets it really holds
(/proc/PID/net/tcp{,6} LISTEN rows whose inode is one of its fds), logs the
cap a handful of times at most (not once per listener), and when the
agent reconnects and sends the same listing again, the same set is still
forwarded: the resync neither drops everything nor flaps.

Ports come from 33000-60999 (bind-tested), away from the 12000-32000 the
other e2e tests pick from, so a parallel test never loses its port."""

import socket
import time
import unittest

from lrhostile import (FakeGuestDaemon, HostileTestCase, listening_tcp, log_lines, measure,
                       port_free_range, raise_nofile, settle, rss_kb, hwm_kb, fd_count)
import lrpeer as P  # tests/lrpeer.py, on the path through lrharness

N = 5000
MAX_STANDINS = 4096


class ListenerFlood(HostileTestCase):

    def _held(self):
        return frozenset(listening_tcp(self.fg.pid))

    def test_dual_stack_flood_and_resync(self):
        raise_nofile(4 * N)
        fg = self.fg
        ports = port_free_range(33000, 60999, N)
        listing = [("::", p, False) for p in ports]
        t0 = time.monotonic()
        P.FakeAgent.send_listing(self.ctl, listing)
        self.ctl.start_reader(keep=False)
        held, took = settle(self._held, timeout=30.0, quiet=1.5, interval=0.25)
        measure("standins_after_flood", len(held), "sockets (cap %d), settled in %.1f s"
                % (MAX_STANDINS, took))
        measure("lorelayd_under_listener_flood", "RSS %s KiB (peak %s), %s fds"
                % (rss_kb(fg.pid), hwm_kb(fg.pid), fd_count(fg.pid)))
        self.check(fg.alive(), "lorelayd died under the listener flood")
        self.check(len(held) <= MAX_STANDINS, "lorelayd holds %d listening sockets for %d dual-"
                   "stack listeners (maxStandins is %d)" % (len(held), N, MAX_STANDINS))
        self.check(len(held) > 0, "lorelayd holds no stand-in at all")
        lines = log_lines(fg.log(), r"maxStandins")
        measure("maxStandins_log_lines", len(lines))
        self.check(1 <= len(lines) <= 3, "%d log lines mention maxStandins (want 1 to 3)"
                   % len(lines))
        flood_lines = len(fg.log().splitlines())
        measure("lorelayd_log_lines_after_flood", flood_lines)

        # Reconnect: drop the control stream, take the new one, same listing.
        self.ctl.close()
        try:
            ctl2 = fg.control(timeout=10.0, listeners=listing)
        except Exception as e:  # queue.Empty, socket errors
            self.check(False, "lorelayd did not reconnect to the fake agent: %r" % e)
            self.verify()
        ctl2.start_reader(keep=False)
        held2, took2 = settle(self._held, timeout=30.0, quiet=1.5, interval=0.25)
        measure("standins_after_resync", len(held2), "settled in %.1f s" % took2)
        lost, gained = held - held2, held2 - held
        measure("standins_lost_gained_by_resync", "%d lost, %d gained" % (len(lost), len(gained)))
        self.check(len(held2) > 0, "the resync removed every stand-in")
        self.check(not lost and not gained, "the resync changed the forwarded set: %d lost "
                   "(e.g. %s), %d gained (e.g. %s)" % (len(lost), sorted(lost)[:3],
                                                        len(gained), sorted(gained)[:3]))
        self.check(len(held2) <= MAX_STANDINS, "%d listening sockets after the resync" % len(held2))
        lines = log_lines(fg.log(), r"maxStandins")
        self.check(len(lines) <= 3, "%d log lines mention maxStandins after the resync"
                   % len(lines))
        self.verify()


if __name__ == "__main__":
    unittest.main()
