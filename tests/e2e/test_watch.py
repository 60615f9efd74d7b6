"""lorelayctl watch and who owns each port.

With a real agent in a namespace: `lorelayctl watch --json` (and the
readable form beside it) sees, in order, a port added in conflict (its host
port taken), its change to forwarding when the port frees, its removal, and
the guest disconnecting and connecting again when the agent is killed and
restarted; status names the python process that owns the listener.

With a fake agent: a watcher that never reads does not slow or grow
lorelayd (forwarding still answers, RSS and descriptors flat), and once it
reads it is told exactly how many events it missed (received + dropped ==
emitted); a hostile command line (newlines, escape sequences, C1 controls,
invalid UTF-8, 1 000 bytes) is capped to 256 bytes in the JSON, and the
table and readable watch escape it: no forged row, no escape byte."""

import json
import os
import signal
import socket
import time
import unittest

from lrharness import LorelayTestCase, Proc, binary, free_port, poll
from lrhostile import (HostileTestCase, agent_pid, echo_through, fd_count, measure, rss_kb)
import lrpeer as P  # tests/lrpeer.py, on the path through lrharness


def asan(pid):
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "libasan" in f.read()
    except OSError:
        return False


def json_lines(text):
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def start_watch(tmpdir, procs, sock, *args):
    """lorelayctl watch ARGS as a host process (stopped with procs); returns
    it once subscribed."""
    p = Proc([binary("lorelayctl"), "--socket", sock, "watch"] + list(args),
             os.path.join(tmpdir, "watch%s.%d.out" % ("".join(args), len(procs))))
    procs.append(p)
    ok, _ = poll(lambda: "watching lorelayd" in p.output() or not p.alive(), 5.0)
    if "watching lorelayd" not in p.output():
        raise AssertionError("lorelayctl watch did not subscribe: %r" % p.output())
    return p


class WatchRealAgent(LorelayTestCase):
    CONFIG = "[lorelay]\nconflictGraceSeconds = 1\n"  # the squatter's port is taken 1 s after

    def test_events_in_order_and_owner(self):
        lr = self.lr
        wj = start_watch(lr.tmpdir, lr.procs, lr.sock, "--json")
        wt = start_watch(lr.tmpdir, lr.procs, lr.sock)
        port = free_port()
        gaddr = "0.0.0.0:%d" % port
        # The host port is taken: the port arrives in conflict.
        squat = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        squat.bind(("127.0.0.1", port))
        squat.listen(1)
        srv = lr.http_server(lr.tmpdir, "0.0.0.0", port)
        p, _ = lr.wait_port(gaddr, "conflict")
        proc = p.get("process")
        self.assertIsInstance(proc, dict, p)
        self.assertEqual(proc["pid"], srv.pid, "owner pid %s, http.server is %d" % (proc, srv.pid))
        self.assertIn("http.server", proc["command"])
        self.assertIn(str(port), proc["command"])
        r = lr.ctl("status")
        row = [l for l in r.stdout.splitlines() if gaddr in l]
        self.assertTrue(row and ("%d " % srv.pid) in row[0] and "http.server" in row[0], r.stdout)
        self.assertIn("PROCESS", r.stdout)
        g = lr.guest()
        self.assertIsInstance(g["uptime_s"], int)
        self.assertIn("last_error", g)
        self.assertIn(g["detection"], ("ebpf", "poll"))

        squat.close()
        lr.wait_port(gaddr, "forwarding", timeout=5.0)
        srv.stop()
        poll(lambda: lr.port(gaddr) is None, 5.0)
        self.assertIsNone(lr.port(gaddr))
        apid = agent_pid(lr)
        self.assertIsNotNone(apid, "no single lorelay-agent in the namespace")
        os.kill(apid, signal.SIGKILL)

        def seen():
            evs = [e for e in json_lines(wj.output())
                   if e.get("event", "").startswith("guest-")]
            return len(evs) >= 2
        poll(seen, 10.0, 0.05)
        evs = json_lines(wj.output())
        mine = [e for e in evs if e["event"].startswith("guest-") or
                e.get("port", {}).get("guest") == gaddr]
        kinds = [e["event"] for e in mine]
        self.assertEqual(kinds[:5], ["port-added", "port-state", "port-removed",
                                     "guest-disconnected", "guest-connected"],
                         "events: %s" % json.dumps(mine, indent=1))
        self.assertEqual(mine[0]["port"]["state"], "conflict")
        self.assertEqual(mine[0]["port"]["process"]["pid"], srv.pid)
        self.assertEqual((mine[1]["previous"], mine[1]["port"]["state"]), ("conflict", "forwarding"))
        self.assertEqual(mine[1]["port"]["host"], ["127.0.0.1:%d" % port])
        for e in mine:
            self.assertEqual(e["guest"], lr.netns)
            self.assertRegex(e["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        # The readable form: the same events, one line each, same order.
        text = [l for l in wt.output().splitlines() if lr.netns in l and
                (gaddr in l or " guest-" in l)]
        tkinds = [k for l in text for k in ("port-added", "port-state", "port-removed",
                                           "guest-disconnected", "guest-connected")
                  if "  %s" % k in l]
        self.assertEqual(tkinds[:5], kinds[:5], "\n".join(text))
        self.assertTrue(wj.alive() and wt.alive(), "a watcher ended")


DENIED_PORT = 80  # outside forwardPorts: shown (denied) and never bound, so cheap to churn


class WatchFakeAgent(HostileTestCase):

    def read_watch(self, s, quiet=1.5, limit=30.0):
        """Everything the watcher socket delivers until it is quiet."""
        s.settimeout(quiet)
        buf = bytearray()
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            try:
                b = s.recv(1 << 16)
            except socket.timeout:
                break
            if not b:
                break
            buf += b
        return buf.decode()

    def test_slow_watcher_is_told_what_it_missed(self):
        fg = self.fg
        fport = free_port()
        P.FakeAgent.send_listing(self.ctl, [("0.0.0.0", fport)], sync=False)
        self.ctl.start_reader()
        ok, _ = poll(lambda: echo_through("127.0.0.1", fport), 5.0, 0.05)
        self.assertTrue(ok, "no forwarding through the fake agent to start with")

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(fg.sock)
        s.sendall(b"watch json\n")
        s.settimeout(3.0)
        self.assertEqual(s.recv(3), b"ok\n")
        rss0, fds0 = rss_kb(fg.pid), fd_count(fg.pid)

        cycles = 10000  # 20 000 events, about 6 MB of lines: an unbounded queue would show
        t0 = time.monotonic()
        batch = []
        for i in range(cycles):
            batch.append(P.listener_frame("0.0.0.0", DENIED_PORT, add=True))
            batch.append(P.listener_frame("0.0.0.0", DENIED_PORT, add=False))
            if len(batch) >= 400:
                self.ctl.send(b"".join(batch), timeout=30)
                batch = []
        self.ctl.send(b"".join(batch), timeout=30)
        # The last frame is a removal: once status shows a marker port added
        # after the flood, every flood event was emitted.
        marker = free_port()
        P.FakeAgent.send_listing(self.ctl, [("0.0.0.0", marker)], sync=False)
        ok, _ = poll(lambda: "0.0.0.0:%d" % marker in (fg.ports(fg.status_or_none() or {}) or {}),
                     20.0, 0.05)
        self.check(ok, "the flood was not applied within 20 s")
        took = time.monotonic() - t0
        rss1, fds1 = rss_kb(fg.pid), fd_count(fg.pid)
        measure("watch_flood", "%d events in %.2f s while one watcher does not read" %
                (2 * cycles + 1, took))
        measure("lorelayd_rss_kib_before_after", "%s -> %s" % (rss0, rss1))
        measure("lorelayd_fds_before_after", "%s -> %s" % (fds0, fds1))
        if asan(fg.pid):
            # ASan's quarantine keeps every freed block for a while: the
            # growth measures the flood's allocations, not what is held.
            measure("rss_check", "not asserted: an AddressSanitizer build")
        else:
            self.check(rss1 - rss0 < 4 * 1024, "RSS grew by %d KiB under a stalled watcher"
                       % (rss1 - rss0))
        self.check(fds1 <= fds0 + 2, "descriptors %d -> %d" % (fds0, fds1))
        self.check(echo_through("127.0.0.1", fport), "forwarding broken while a watcher stalls")
        t1 = time.monotonic()
        r = fg.ctl("status", "--json", timeout=5)
        measure("status_answer_s_while_watcher_stalls", "%.3f" % (time.monotonic() - t1))
        self.check(r.returncode == 0, "status failed while a watcher stalls: %s" % r.stderr)

        evs = json_lines(self.read_watch(s))
        s.close()
        got = [e for e in evs if e.get("port", {}).get("guest") == "0.0.0.0:%d" % DENIED_PORT]
        dropped = [e for e in evs if e.get("event") == "dropped"]
        ndropped = sum(e["count"] for e in dropped)
        measure("watch_received_dropped", "%d received, %d dropped in %d notice(s)"
                % (len(got), ndropped, len(dropped)))
        self.check(dropped, "a watcher that did not read was never told it missed events")
        # The marker's port-added is the one more event, received or dropped.
        marks = [e for e in evs if e.get("port", {}).get("guest") == "0.0.0.0:%d" % marker]
        self.check(len(got) + len(marks) + ndropped == 2 * cycles + 1,
                   "received %d + %d + dropped %d != %d emitted"
                   % (len(got), len(marks), ndropped, 2 * cycles + 1))
        self.check(all(e["port"]["state"] == "denied" for e in got), "flood event not denied")
        self.check(fg.alive(), "lorelayd died")
        self.verify()

    def test_hostile_command_line(self):
        fg = self.fg
        wj = start_watch(fg.tmpdir, fg.procs, fg.sock, "--json")
        wt = start_watch(fg.tmpdir, fg.procs, fg.sock)
        port = free_port()
        hostile = (b"evil\n  tcp   0.0.0.0:1  forged-row\r\x1b[31mRED\x1b]0;title\x07\x9b\xc2\x9b2J"
                   b"\xff\xfe\\x41 " + b"A" * 1000)
        P.FakeAgent.send_listing(self.ctl, [("0.0.0.0", port, False, (4242, hostile))],
                                 sync=False)
        self.ctl.start_reader()
        gaddr = "0.0.0.0:%d" % port
        ok, _ = poll(lambda: gaddr in fg.ports(fg.status_or_none() or {}), 5.0)
        self.assertTrue(ok, "the hostile listener never showed")
        r = fg.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)  # valid JSON (and valid UTF-8) whatever the guest sent
        p = {x["guest"]: x for x in doc["guests"][0]["ports"]}[gaddr]
        cmd = p["process"]["command"]
        self.assertEqual(p["process"]["pid"], 4242)
        self.assertLessEqual(len(cmd.encode()), 256, "command not capped: %d bytes" %
                             len(cmd.encode()))
        self.assertTrue(cmd.startswith("evil\n  tcp"), repr(cmd[:40]))
        self.assertNotIn("\ufffd", cmd[:10])

        r = fg.ctl("status")
        out = r.stdout
        for bad in ("\x1b", "\x07", "\r", "\x9b", "\u009b"):
            self.assertNotIn(bad, out, "raw %r in the table" % bad)
        rows = [l for l in out.splitlines() if l.startswith("  tcp ")]
        self.assertEqual(len(rows), 1, "forged table rows:\n" + out)
        self.assertIn("4242 evil\\x0a", rows[0])
        self.assertIn("\\x1b[31m", rows[0])
        self.assertIn("\\u009b", rows[0])
        self.assertIn("\\\\x41", rows[0])

        ok, _ = poll(lambda: gaddr in wt.output() and gaddr in wj.output(), 5.0)
        self.assertTrue(ok, "watchers did not see the port: %r %r" % (wt.output(), wj.output()))
        lines = [l for l in wt.output().splitlines() if gaddr in l]
        self.assertEqual(len(lines), 1, wt.output())
        for bad in ("\x1b", "\x07", "\r"):
            self.assertNotIn(bad, wt.output())
        ev = [e for e in json_lines(wj.output()) if e.get("event") == "port-added"][0]
        self.assertEqual(ev["port"]["process"]["command"], cmd)

        # A NUL breaks the protocol's string rule: that control stream ends,
        # lorelayd and its other guests' state do not.
        self.ctl.send(P.listener_frame("0.0.0.0", free_port(), owner=(1, b"a\0b")))
        ok, _ = poll(lambda: "LISTENER_ADD" in fg.log(), 5.0)
        self.assertTrue(ok, "no log line for a LISTENER_ADD with a NUL in its command")
        self.assertTrue(fg.alive())


class WatchBudget(HostileTestCase):
    """Watchers are idle by design: statusIdleTimeoutMs does not cut them,
    but they share maxStatusClients, at most half of it."""

    CONFIG = "[lorelay]\nstatusIdleTimeoutMs = 300\nmaxStatusClients = 4\n"

    def subscribe(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3.0)
        s.connect(self.fg.sock)
        s.sendall(b"watch json\n")
        got = s.recv(200)
        if got.startswith(b"ok\n"):  # the snapshot (no ports here) ends at once
            while b"snapshot-end" not in got:
                got += s.recv(200)
            return s, got.split(b"\n", 1)[0] + b"\n"
        return s, got

    def test_idle_timeout_and_cap(self):
        fg = self.fg
        w1, a1 = self.subscribe()
        w2, a2 = self.subscribe()
        self.assertEqual((a1, a2), (b"ok\n", b"ok\n"))
        w3, a3 = self.subscribe()
        self.assertTrue(a3.startswith(b"error: too many watchers"), a3)
        w3.close()
        idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        idle.connect(fg.sock)  # says nothing: cut after 300 ms
        time.sleep(1.2)
        idle.settimeout(1.0)
        self.assertEqual(idle.recv(10), b"", "an idle status client was not cut")
        idle.close()
        r = fg.ctl("status", "--json", timeout=5)
        self.assertEqual(r.returncode, 0, "status refused with two watchers: %s" % r.stderr)
        port = free_port()
        P.FakeAgent.send_listing(self.ctl, [("0.0.0.0", port)], sync=False)
        for w in (w1, w2):
            w.settimeout(3.0)
            ev = json.loads(w.recv(65536).decode().splitlines()[0])
            self.assertEqual((ev["event"], ev["port"]["guest"]), ("port-added", "0.0.0.0:%d" % port))
            w.close()


if __name__ == "__main__":
    unittest.main()
