"""lorelayd under systemd, without systemd: the test plays the service
manager.

- Type=notify: NOTIFY_SOCKET names a datagram socket the test listens on.
  READY=1 arrives only once the status socket answers (systemctl start
  returns then), with a STATUS= line counting guests and ports; a SIGHUP
  is framed by RELOADING=1 (with MONOTONIC_USEC, which systemd 253+ needs)
  and READY=1; SIGTERM sends STOPPING=1.
- The journal: when JOURNAL_STREAM names stderr's device and inode,
  lorelayd's lines carry a "<N>" syslog priority and no timestamp; when it
  names another stream (stderr redirected to a file), they keep the
  console format.
"""

import os
import re
import signal
import socket
import time
import unittest

from lrharness import LorelayTestCase, Proc, binary, free_ports, poll, read_status

TS_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} lorelayd ")
JOURNAL_LINE = re.compile(r"^<([0-7])>(error|warn|info|debug): ")
GUEST_LINE = re.compile(r"^(<[0-7]>|\d\d:\d\d:\d\d\.\d{3} )lorelay-(agent|init) ")
GUEST_JOURNAL_LINE = re.compile(r"^<[0-7]>lorelay-(agent|init) (error|warn|info|debug): ")
PRIORITY = {"error": "3", "warn": "4", "info": "6", "debug": "7"}


class Systemd(LorelayTestCase):
    START = False
    CONFIG = "[lorelay]\n"

    def start_daemon(self, env_extra, log=None):
        lr = self.lr
        lr.daemon_runs += 1
        log = log or os.path.join(lr.tmpdir, "lorelayd.%d.log" % lr.daemon_runs)
        lr.log_paths.append(log)
        argv = [binary("lorelayd"), "--netns", lr.netns, "--socket", lr.sock,
                "--log-level", "debug", "-c", lr.config_path]
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        env.update(env_extra)
        lr.daemon = Proc(argv, log, env=env)
        return lr.daemon

    def listen_notify(self):
        path = os.path.join(self.lr.tmpdir, "notify.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        self.addCleanup(s.close)
        return s, path

    def recv(self, s, timeout=10.0):
        """One notification as a dict, and whether the status socket
        answered at the moment it arrived."""
        s.settimeout(timeout)
        try:
            data = s.recv(4096).decode()
        except socket.timeout:
            self.fail("no sd_notify message within %.0f s; log:\n%s" % (timeout, self.lr.log()))
        try:
            read_status(self.lr.sock, timeout=1.0)
            answered = True
        except (OSError, ValueError):
            answered = False
        msg = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
        return msg, answered

    def test_notify_ready_reload_stopping(self):
        s, path = self.listen_notify()
        d = self.start_daemon({"NOTIFY_SOCKET": path})
        msg, answered = self.recv(s)
        self.assertEqual(msg.get("READY"), "1", msg)
        self.assertTrue(answered, "READY=1 came before the status socket answered")
        # One guest configured; connected or not yet, the count is there.
        self.assertRegex(msg.get("STATUS", ""), r"^1 guest \(\d connected\), \d+ ports? forwarding")
        self.lr.wait_connected()
        # A forwarded port, counted in the STATUS= that comes with the
        # READY=1 after the reload.
        port = free_ports(1)[0]
        self.lr.guest_server("banner", "0.0.0.0", port, "tag=sd")
        self.lr.wait_port("0.0.0.0:%d" % port, "forwarding")

        os.kill(d.pid, signal.SIGHUP)
        msg, _ = self.recv(s)
        self.assertEqual(msg.get("RELOADING"), "1", msg)
        usec = int(msg.get("MONOTONIC_USEC", "0"))
        now = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
        self.assertTrue(0 < usec <= now and now - usec < 10e6,
                        "MONOTONIC_USEC=%s is not the monotonic time of the reload (now %d)"
                        % (msg.get("MONOTONIC_USEC"), now))
        msg, _ = self.recv(s)
        while "READY" not in msg and "STATUS" in msg:  # a STATUS= refresh in between
            msg, _ = self.recv(s)
        self.assertEqual(msg.get("READY"), "1", msg)
        self.assertEqual(msg.get("STATUS"), "1 guest (1 connected), 1 port forwarding", msg)

        os.kill(d.pid, signal.SIGTERM)
        msg, _ = self.recv(s)
        while "STOPPING" not in msg and set(msg) == {"STATUS"}:
            msg, _ = self.recv(s)
        self.assertEqual(msg.get("STOPPING"), "1", msg)
        d.p.wait(10)
        self.assertEqual(d.p.returncode, 0, self.lr.log())

    def test_no_notify_socket_no_message(self):
        # Without NOTIFY_SOCKET nothing is sent anywhere and lorelayd runs as before.
        d = self.start_daemon({})
        self.lr.wait_connected()
        os.kill(d.pid, signal.SIGHUP)
        time.sleep(0.2)
        self.assertTrue(d.alive())
        self.assertEqual(self.lr.stop_daemon(), 0)

    def journal_run(self, matching):
        log = os.path.join(self.lr.tmpdir, "lorelayd.journal.log")
        open(log, "wb").close()
        st = os.stat(log)
        ino = st.st_ino if matching else st.st_ino + 1
        d = self.start_daemon({"JOURNAL_STREAM": "%d:%d" % (st.st_dev, ino)}, log=log)
        self.lr.wait_connected()
        os.kill(d.pid, signal.SIGHUP)  # a reload without a guest change: info lines
        poll(lambda: "reloaded" in self.lr.log(), 5.0)
        self.assertEqual(self.lr.stop_daemon(), 0)
        # lorelay-init and the agent inherit the stream: they write for the
        # journal too, naming themselves (journald names the stream after
        # lorelayd). Only lorelayd's own lines are returned.
        lines = self.lr.log().splitlines()
        theirs = [l for l in lines if GUEST_LINE.match(l)]
        self.assertTrue(theirs, "no line from lorelay-init or the agent:\n" + "\n".join(lines))
        for l in theirs:
            if matching:
                self.assertRegex(l, GUEST_JOURNAL_LINE)
            else:
                self.assertRegex(l, r"^\d\d:\d\d:\d\d\.\d{3} lorelay-(agent|init) ")
        return [l for l in lines if l not in theirs]

    def test_journal_stream_priorities(self):
        lines = self.journal_run(True)
        ours = [l for l in lines if JOURNAL_LINE.match(l)]
        self.assertTrue(any("running" in l for l in ours), "\n".join(lines))
        self.assertTrue(any("reloaded" in l for l in ours), "\n".join(lines))
        for l in ours:
            m = JOURNAL_LINE.match(l)
            self.assertEqual(m.group(1), PRIORITY[m.group(2)], l)
        stamped = [l for l in lines if TS_LINE.match(l)]
        self.assertEqual(stamped, [], "lines with a timestamp in the journal")

    def test_journal_stream_elsewhere_keeps_timestamps(self):
        lines = self.journal_run(False)
        self.assertTrue(any(TS_LINE.match(l) and "running" in l for l in lines), "\n".join(lines))
        self.assertEqual([l for l in lines if JOURNAL_LINE.match(l)], [])


if __name__ == "__main__":
    unittest.main()
