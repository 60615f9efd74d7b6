"""What an operator sees (issue 20 items 3-6, 8, 10):

- a port in conflict names its holder: a host program (pid, command, from
  the host's socket table) or another guest; the log line names the guest
  and the holder; remapOnConflict takes the next free port above;
- portMap: guest 80 -> a host port of the admin's choice, forwarded
  although 80 is outside forwardPorts; the host port's own guest listener
  is denied;
- a guest-side connect failure is a warning and counts in connect_failures;
- watch starts from the present (snapshot, snapshot-end), --guest filters;
  status NAME shows one guest, an unknown one is an error;
- the table fits $COLUMNS, --wide shows everything;
- statusGroup: a member of the group reads status through the system
  socket without flags, a non-member is told which group grants access.
"""

import grp
import json
import os
import pwd
import socket
import subprocess
import unittest

from lrharness import (LorelayTestCase, MultiLorelay, Proc, binary, free_port, free_ports, poll)
from lrhostile import HostileTestCase
import lrpeer as P


def section(name, ns, extra=""):
    return "[guest %s]\nnetns = %s\n%s\n" % (name, ns, extra)


def start_watch(lr, *args):
    p = Proc([binary("lorelayctl"), "--socket", lr.sock, "watch"] + list(args),
             os.path.join(lr.tmpdir, "watch.%d.out" % len(lr.procs)))
    lr.procs.append(p)
    ok, _ = poll(lambda: "snapshot-end" in p.output() or not p.alive(), 5.0)
    if not ok:
        raise AssertionError("no snapshot-end from watch: %r" % p.output())
    return p


def json_lines(text):
    return [json.loads(l) for l in text.splitlines() if l.startswith("{")]


class Conflicts(LorelayTestCase):
    CONFIG = "[lorelay]\nconflictRetryMs = 200\nconflictGraceSeconds = 1\n"

    def test_host_program_holds_the_port(self):
        lr = self.lr
        port = free_port()
        squat = socket.socket()
        squat.bind(("127.0.0.1", port))
        squat.listen(1)
        self.addCleanup(squat.close)
        lr.guest_server("banner", "0.0.0.0", port, "tag=g")
        p, _ = lr.wait_port("0.0.0.0:%d" % port, "conflict")
        self.assertEqual(p["holder"]["pid"], os.getpid(), p)
        self.assertIn("python", p["holder"]["command"])
        self.assertEqual(p["connect_failures"], 0)
        log = lr.log()
        self.assertIn("%s: host 127.0.0.1:%d is taken by pid %d (" % (lr.netns, port, os.getpid()),
                      log)
        table = lr.ctl("status", "--wide").stdout
        self.assertIn("host port held by pid %d" % os.getpid(), table)
        self.assertIn("FAIL", table)
        squat.close()
        p, _ = lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        self.assertNotIn("holder", p)

    def test_udp_holder(self):
        lr = self.lr
        port = free_port()
        squat = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squat.bind(("127.0.0.1", port))
        self.addCleanup(squat.close)
        lr.guest_server("udpecho", "0.0.0.0", port, stdin=True)
        p, _ = lr.wait_port("0.0.0.0:%d" % port, "conflict",
                            pred=lambda q: q.get("proto") == "udp")
        self.assertEqual(p["holder"]["pid"], os.getpid(), p)

    def test_remap_takes_the_next_port(self):
        lr = self.lr
        lr.cleanup()
        port = free_port()
        while not all(self._free(port + i) for i in range(2)):
            port = free_port()
        self.lr = lr = type(lr)(config="[lorelay]\nremapOnConflict = true\n")
        lr.start()
        squat = socket.socket()
        squat.bind(("127.0.0.1", port))
        squat.listen(1)
        self.addCleanup(squat.close)
        lr.guest_server("banner", "0.0.0.0", port, "tag=g")
        p, _ = lr.wait_port("0.0.0.0:%d" % port, "remapped")
        self.assertEqual(p["host"], ["127.0.0.1:%d" % (port + 1)])
        self.assertEqual(p["holder"]["pid"], os.getpid())

    @staticmethod
    def _free(port):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()


class PortMap(LorelayTestCase):
    START = False

    def test_guest_80_to_a_host_port(self):
        hp, other = free_ports(2)
        self.lr.cleanup()
        self.lr = lr = type(self.lr)(config="[lorelay]\nportMap = 80:%d\n" % hp)
        lr.start()
        lr.guest_server("banner", "0.0.0.0", 80, "tag=eighty")
        p, _ = lr.wait_port("0.0.0.0:80", "forwarding")
        self.assertEqual(p["guest"], "0.0.0.0:80")
        self.assertEqual(p["host"], ["127.0.0.1:%d" % hp])
        self.assertBanner("127.0.0.1", hp, b"guest:eighty\n")
        self.assertRefused("127.0.0.1", 80) if self._nothing_on_80() else None
        # The guest's own listener on the mapped host port: denied, said why.
        lr.guest_server("banner", "0.0.0.0", hp, "tag=hp")
        p, _ = lr.wait_port("0.0.0.0:%d" % hp, "denied")
        self.assertIn("portMap", p["reason"])
        # Unmapped below 1024: still denied by forwardPorts.
        lr.guest_server("banner", "0.0.0.0", 81, "tag=81")
        lr.wait_port("0.0.0.0:81", "denied")

    @staticmethod
    def _nothing_on_80():
        s = socket.socket()
        try:
            s.settimeout(0.5)
            s.connect(("127.0.0.1", 80))
            return False
        except OSError:
            return True
        finally:
            s.close()


class ConnectFailures(HostileTestCase):
    AGENT = {"data": "refuse"}

    def test_counted_and_warned(self):
        port = free_port()
        self.ctl.send(P.listener_frame("127.0.0.1", port))
        ok, _ = poll(lambda: self.fg.ports().get("127.0.0.1:%d" % port, {}).get("state")
                     == "forwarding", 5.0)
        self.assertTrue(ok, self.fg.status())
        for _ in range(3):
            try:  # the refusal comes back as a reset, maybe before connect returns
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.settimeout(5)
                c.recv(10)
                c.close()
            except OSError:
                pass
        ok, _ = poll(lambda: self.fg.ports()["127.0.0.1:%d" % port]["connect_failures"] == 3, 5.0)
        self.assertTrue(ok, self.fg.ports())
        log = self.fg.log()
        self.assertRegex(log, r"warn: %s: guest port %d: the guest could not connect to its server"
                         % (self.fg.name, port))
        table = self.fg.ctl("status", "--wide").stdout
        hdr = [l for l in table.splitlines() if "FAIL" in l][0].split()
        row = [l for l in table.splitlines() if "127.0.0.1:%d" % port in l][0].split()
        self.assertEqual(row[hdr.index("FAIL") - 0], "3", table)


class WatchAndStatus(LorelayTestCase):
    START = False

    def setUp(self):
        super().setUp()
        self.lr.cleanup()

    def test_snapshot_filter_and_status_name(self):
        p1, p2, p3 = free_ports(3)
        lr = self.lr = MultiLorelay(2, n_args=0, tag="lro")
        a, b = lr.names
        lr.write_config(section("one", a) + section("two", b, "hostAddress = 127.0.0.7"))
        lr.start(wait=False)
        lr.wait_guests(["one", "two"])
        lr.guest_server("banner", "0.0.0.0", p1, "tag=1", ns=a)
        lr.guest_server("banner", "0.0.0.0", p2, "tag=2", ns=b)
        lr.wait_port("0.0.0.0:%d" % p1, "forwarding", name="one")
        lr.wait_port("0.0.0.0:%d" % p2, "forwarding", name="two")

        w_all = start_watch(lr, "--json")
        w_two = start_watch(lr, "--json", "--guest", "two")
        ev = json_lines(w_all.output())
        end = [i for i, e in enumerate(ev) if e["event"] == "snapshot-end"]
        self.assertEqual(len(end), 1, ev)
        snap = ev[:end[0]]
        self.assertTrue(all(e.get("snapshot") is True and e["event"] == "port-added"
                            for e in snap), snap)
        self.assertEqual(sorted((e["guest"], e["port"]["guest"]) for e in snap),
                         sorted([("one", "0.0.0.0:%d" % p1), ("two", "0.0.0.0:%d" % p2)]))
        ev2 = json_lines(w_two.output())
        self.assertEqual([(e.get("guest"), e["event"]) for e in ev2],
                         [("two", "port-added"), (None, "snapshot-end")])

        # Live events after the snapshot carry no mark, and the filter holds.
        lr.guest_server("banner", "0.0.0.0", p3, "tag=3", ns=a)
        lr.wait_port("0.0.0.0:%d" % p3, "forwarding", name="one")
        ok, _ = poll(lambda: any(e.get("port", {}).get("guest") == "0.0.0.0:%d" % p3
                                 for e in json_lines(w_all.output())), 3.0)
        self.assertTrue(ok, w_all.output())
        live = [e for e in json_lines(w_all.output())
                if e.get("port", {}).get("guest") == "0.0.0.0:%d" % p3]
        self.assertNotIn("snapshot", live[0])
        self.assertFalse(any(e.get("guest") == "one" for e in json_lines(w_two.output())))

        # status NAME
        r = lr.ctl("status", "--json", "two")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([g["name"] for g in json.loads(r.stdout)["guests"]], ["two"])
        r = lr.ctl("status", "two")
        self.assertIn("guest two", r.stdout)
        self.assertNotIn("guest one", r.stdout)
        r = lr.ctl("status", "nope")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no guest named 'nope'", r.stderr)
        self.assertIn("one two", r.stderr)
        r = lr.ctl("watch", "--guest", "nope")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("no guest named 'nope'", r.stderr)


class TableWidth(LorelayTestCase):

    def test_fits_columns_and_wide(self):
        lr = self.lr
        port = free_port()
        # Long enough that the row needs more than 100 columns, short enough
        # that the command line (cut at 256 bytes, with the checkout's path
        # in it) keeps all of it.
        long_tag = "tag=" + "x" * 60
        lr.guest_server("banner", "0.0.0.0", port, long_tag)
        lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        ok, _ = poll(lambda: "process" in (lr.port("0.0.0.0:%d" % port) or {}), 5.0)
        env = dict(os.environ, COLUMNS="100")
        r = subprocess.run([binary("lorelayctl"), "--socket", lr.sock, "status"],
                           capture_output=True, text=True, env=env, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = [l for l in r.stdout.splitlines() if l.startswith("  ")]
        self.assertTrue(rows, r.stdout)
        for l in rows:
            self.assertLessEqual(len(l), 100, "row wider than 100 columns:\n%s" % r.stdout)
        row = [l for l in rows if ":%d" % port in l][0]
        self.assertTrue(row.endswith("~"), row)
        r = subprocess.run([binary("lorelayctl"), "--socket", lr.sock, "status", "--wide"],
                           capture_output=True, text=True, env=env, timeout=10)
        command = lr.port("0.0.0.0:%d" % port)["process"]["command"]
        self.assertIn("x" * 60, command)
        self.assertIn(command, r.stdout)


class StatusGroup(LorelayTestCase):
    START = False

    def _run(self, args, check=True):
        return subprocess.run(args, check=check, capture_output=True, text=True)

    def setUp(self):
        super().setUp()
        self.lr.cleanup()
        tag = "lrg%d" % os.getpid()
        self.group, self.member, self.outsider = tag, tag + "m", tag + "o"
        self._run(["groupadd", self.group])
        self.addCleanup(self._run, ["groupdel", self.group], False)
        for u in (self.member, self.outsider):
            self._run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", u])
            self.addCleanup(self._run, ["userdel", u], False)
        self._run(["usermod", "-aG", self.group, self.member])
        st = os.stat("/run/lorelay") if os.path.exists("/run/lorelay") else None
        if st:
            self.addCleanup(os.chown, "/run/lorelay", st.st_uid, st.st_gid)

    def ctl_as(self, user, *args):
        pw = pwd.getpwnam(user)
        groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]
        env = {"PATH": "/usr/bin:/bin", "HOME": "/"}
        return subprocess.run([binary("lorelayctl")] + list(args), capture_output=True,
                              text=True, env=env, timeout=10, user=pw.pw_uid, group=pw.pw_gid,
                              extra_groups=groups)

    def test_member_and_outsider(self):
        lr = self.lr = MultiLorelay(1, n_args=1, tag="lrg")
        lr.write_config("[lorelay]\nstatusGroup = %s\n" % self.group)
        # The system socket: what lorelayctl falls back to for a user who
        # runs no lorelayd of their own.
        lr.sock = "/run/lorelay/lorelayd.sock"
        if os.path.exists(lr.sock):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(lr.sock)
                self.fail("a lorelayd already serves %s: this test needs it" % lr.sock)
            except OSError:
                pass
            finally:
                s.close()
        lr.start()
        st = os.stat(lr.sock)
        self.assertEqual(st.st_mode & 0o777, 0o660)
        self.assertEqual(grp.getgrgid(st.st_gid).gr_name, self.group)
        self.assertIn("group %s may connect" % self.group, lr.log())

        r = self.ctl_as(self.member, "status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([g["name"] for g in json.loads(r.stdout)["guests"]], [lr.names[0]])

        r = self.ctl_as(self.outsider, "status")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("permission denied", r.stderr)
        self.assertIn(self.group, r.stderr)

    def test_missing_group_is_said(self):
        lr = self.lr = MultiLorelay(1, n_args=1, tag="lrg")
        lr.write_config("[lorelay]\nstatusGroup = %sx\n" % self.group)
        lr.start()
        self.assertIn("statusGroup '%sx' does not exist" % self.group, lr.log())
        self.assertEqual(os.stat(lr.sock).st_mode & 0o777, 0o660)


class Logs(LorelayTestCase):

    def test_netns_start_and_planned_stop(self):
        lr = self.lr
        warns = [l for l in lr.log().splitlines() if "lorelayd warn" in l and "retrying" in l]
        self.assertEqual(warns, [], "a normal --netns start warned:\n" + lr.log())
        # lorelay-init stopped on purpose: a line, not a warning; it comes back.
        pids = lr.procs_named("lorelay-init")
        self.assertTrue(pids)
        mark = len(lr.log())
        os.kill(pids[0], 15)
        ok, _ = poll(lambda: "lorelay-init stopped" in lr.log()[mark:], 5.0)
        self.assertTrue(ok, lr.log()[mark:])
        self.assertNotRegex(lr.log()[mark:], r"warn: .*lorelay-init")
        lr.wait_connected(10.0)

    def test_address_said_once(self):
        path = "/nonexistent/lorelay-%d.sock" % os.getpid()
        sock = os.path.join(self.lr.tmpdir, "a.sock")
        p = Proc([binary("lorelayd"), "--guest", "unix:" + path, "--socket", sock],
                 os.path.join(self.lr.tmpdir, "addr.log"))
        self.lr.procs.append(p)
        ok, _ = poll(lambda: "retrying" in p.output(), 5.0)
        self.assertTrue(ok, p.output())
        line = [l for l in p.output().splitlines() if "retrying" in l][0]
        self.assertEqual(line.count(path), 1, line)
        self.assertIn("warn", line)



if __name__ == "__main__":
    unittest.main()
