"""Hostile local client 4: the status endpoint. The socket file is mode 0660
or tighter even when lorelayd starts with umask 000, and the directory
lorelayd creates for it is owned by root and not writable by others. 600
idle connections to it must not take lorelayd down or stop forwarding:
beyond maxStatusClients (default 32) extra connections are closed at once,
idle ones are cut after statusIdleTimeoutMs (default 5000), one log line
names maxStatusClients, and lorelayctl status still answers."""

import os
import select
import socket
import stat
import time
import unittest

from lrharness import free_port, poll
from lrhostile import (FakeGuestDaemon, HostileTestCase, echo_through, log_lines, measure,
                       raise_nofile, rss_kb, hwm_kb, fd_count)
import lrpeer as P  # tests/lrpeer.py, on the path through lrharness

N = 600
MAX_CLIENTS = 32
IDLE_S = 5.0


class StatusEndpoint(HostileTestCase):
    START = False

    def test_permissions_and_idle_flood(self):
        raise_nofile(4 * N)
        self.fg.cleanup()
        fg = self.fg = FakeGuestDaemon(socket_rel="run/lorelay/lorelayd.sock")
        fg.start(umask=0)  # a careless service manager: permissions must not come from umask
        ctl = fg.control()
        fg.wait_connected()
        port = free_port()
        P.FakeAgent.send_listing(ctl, [("0.0.0.0", port)])
        ctl.start_reader()
        ok, _ = poll(lambda: echo_through("127.0.0.1", port), 5.0, 0.05)
        self.assertTrue(ok, "no forwarding through the fake agent to start with")

        # -- permissions
        st = os.stat(fg.sock)
        mode = stat.S_IMODE(st.st_mode)
        measure("status_socket_mode", oct(mode))
        self.check(mode & ~0o660 == 0, "status socket %s has mode %s (want 0660 or tighter)"
                   % (fg.sock, oct(mode)))
        d = os.path.dirname(fg.sock)
        dst = os.stat(d)
        measure("status_dir_mode", "%s uid %d" % (oct(stat.S_IMODE(dst.st_mode)), dst.st_uid))
        self.check(dst.st_uid == 0, "%s is owned by uid %d, not root" % (d, dst.st_uid))
        self.check(not dst.st_mode & stat.S_IWOTH, "%s is writable by others (mode %s)"
                   % (d, oct(stat.S_IMODE(dst.st_mode))))

        # -- 600 idle connections
        conns, refused = [], 0
        t0 = time.monotonic()
        for _ in range(N):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(0.5)
            try:
                s.connect(fg.sock)
                conns.append(s)
            except OSError:
                refused += 1
                s.close()
        opened = time.monotonic()
        measure("status_idle_connects", "%d ok, %d failed, in %.2f s" % (len(conns), refused,
                                                                         opened - t0))

        def still_open():
            alive = []
            pl = select.poll()  # not select(): fd numbers may pass FD_SETSIZE
            for s in conns:
                pl.register(s, select.POLLIN)
            rs = {fd for fd, _ in pl.poll(0)}
            for s in conns:
                if s.fileno() in rs:
                    try:
                        if s.recv(4096):
                            alive.append(s)  # an answer to nothing: counts as open
                            continue
                    except OSError:
                        pass
                    continue
                alive.append(s)
            return alive

        fwd = echo_through("127.0.0.1", port)
        self.check(fwd, "forwarding stopped while %d status connections are open" % len(conns))
        time.sleep(max(0.0, opened + 1.0 - time.monotonic()))
        open_1s = len(still_open())
        measure("status_conns_open_after_1s", open_1s, "(max %d)" % MAX_CLIENTS)
        measure("lorelayd_under_status_flood", "RSS %s KiB (peak %s), %s fds"
                % (rss_kb(fg.pid), hwm_kb(fg.pid), fd_count(fg.pid)))
        self.check(open_1s <= MAX_CLIENTS + 4, "%d idle status connections still open 1 s later "
                   "(maxStatusClients is %d: extras must be closed at once)"
                   % (open_1s, MAX_CLIENTS))

        answered, took = poll(lambda: fg.ctl("status", timeout=3).returncode == 0, 8.0, 0.2)
        measure("lorelayctl_status_answered_after_s", "%.2f" % (time.monotonic() - opened))
        self.check(answered, "lorelayctl status did not answer within 8 s of the idle flood")

        left, _ = poll(lambda: not still_open(), IDLE_S + 3.0 - (time.monotonic() - opened), 0.1)
        remaining = len(still_open())
        measure("status_conns_open_after_s", "%d after %.1f s" % (remaining,
                                                                 time.monotonic() - opened))
        self.check(remaining == 0, "%d idle status connections still open %.1f s later "
                   "(statusIdleTimeoutMs is %d)" % (remaining, time.monotonic() - opened,
                                                    IDLE_S * 1000))
        for s in conns:
            s.close()
        self.check(fg.alive(), "lorelayd died under the status flood")
        self.check(echo_through("127.0.0.1", port), "forwarding broken after the status flood")
        lines = log_lines(fg.log(), r"maxStatusClients")
        measure("maxStatusClients_log_lines", len(lines))
        self.check(lines, "no log line mentioning maxStatusClients")
        self.check(len(lines) <= 3, "%d maxStatusClients lines for one flood" % len(lines))
        self.verify()


if __name__ == "__main__":
    unittest.main()
