"""A strict configuration and an all-or-nothing reload (issue 20 item 2,
issue 17 item 3):

- at start, an unknown key (with "did you mean"), a duplicate key and an
  empty [guest] section make lorelayd exit 2 naming file:line; a
  single-valued flag given twice exits 2 naming the flag;
- lorelayd with no guest configured starts, status shows none, and a
  reload adds them; a HUP with no file does not claim it reloaded one;
- status carries "config": the file in effect, when it was read and the
  last reload's result;
- a file whose transport has a typo, whose token file is missing, or whose
  namespace cannot be opened, each in the section of a running guest, is
  refused as a whole: every running guest keeps forwarding, and a
  connection open across the attempts keeps relaying.
"""

import os
import socket
import subprocess
import unittest

from lrharness import (LorelayTestCase, MultiLorelay, binary, finish, free_ports, poll)


def section(name, ns, extra=""):
    return "[guest %s]\nnetns = %s\n%s\n" % (name, ns, extra)


def run_lorelayd(args, timeout=10):
    return subprocess.run([binary("lorelayd")] + args, capture_output=True, text=True,
                          timeout=timeout)


class StrictStart(LorelayTestCase):
    START = False

    def write(self, text):
        path = os.path.join(self.lr.tmpdir, "strict.ini")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_bad_files_exit_2(self):
        sock = os.path.join(self.lr.tmpdir, "s.sock")
        cases = [
            ("[lorelay]\nipv6 = true\nreversePort = 5432\n", ":3:", "did you mean `reversePorts`?"),
            ("[lorelay]\nipv6 = true\nipv6 = false\n", ":3:", "ipv6 is set twice"),
            ("[lorelay]\nudp = true\n[guest x]\n", ":3:", "section [guest x] is empty"),
            ("[lorelay]\n[lorelay]\nudp = true\n", ":2:", "appears twice"),
            ("[guest v]\ntransport = vsokc:3:5\n", ":2:", "transport = 'vsokc:3:5'"),
        ]
        for text, line, needle in cases:
            path = self.write(text)
            r = run_lorelayd(["-c", path, "--socket", sock])
            self.assertEqual(r.returncode, 2, "%r: rc %d\n%s" % (text, r.returncode, r.stderr))
            self.assertIn(path + line, r.stderr)
            self.assertIn(needle, r.stderr)

    def test_flag_twice_exits_2(self):
        r = run_lorelayd(["--name", "a", "--name", "b", "--guest", "unix:/nonexistent"])
        self.assertEqual(r.returncode, 2)
        self.assertIn("--name given twice", r.stderr)


class Reload(LorelayTestCase):
    START = False

    def setUp(self):
        super().setUp()
        self.lr.cleanup()

    def test_no_guest_waits_and_reload_adds(self):
        lr = self.lr = MultiLorelay(1, n_args=0, tag="lrs")
        lr.write_config("[lorelay]\nudp = true\n")
        lr.start(wait=False)
        ok, _ = poll(lambda: lr._status_or_none() is not None, 10.0)
        self.assertTrue(ok, "no status endpoint:\n" + lr.log())
        st = lr.status()
        self.assertEqual(st["guests"], [])
        self.assertEqual(st["config"]["path"], lr.config_path)
        self.assertIsNotNone(st["config"]["loaded_at"])
        self.assertTrue(st["config"]["last_reload"]["ok"])
        self.assertIsNone(st["config"]["last_reload"]["error"])
        table = lr.ctl("status").stdout
        self.assertIn("no guests", table)
        self.assertIn("config " + lr.config_path, table)

        lr.write_config(section("g", lr.names[0]))
        lr.reload()
        lr.wait_guests(["g"])
        self.assertTrue(lr.status()["config"]["last_reload"]["ok"])

        # A refused reload shows in status and in the table.
        lr.write_config(section("g", lr.names[0]) + "bogusKey = 1\n")
        out = lr.reload()
        self.assertIn("unknown key 'bogusKey'", out)
        cfg = lr.status()["config"]
        self.assertFalse(cfg["last_reload"]["ok"])
        self.assertIn("lorelay.ini:4: unknown key 'bogusKey'", cfg["last_reload"]["error"])
        self.assertIn("last reload", lr.ctl("status").stdout)
        self.assertIn("FAILED", lr.ctl("status").stdout)
        self.assertEqual([g["name"] for g in lr.status()["guests"]], ["g"])

    def test_hup_without_file(self):
        lr = self.lr = MultiLorelay(1, n_args=1, tag="lrs")
        lr.start()  # --netns only; no -c: the platform default path, missing
        self.assertIsNone(lr.status()["config"]["path"])
        mark = len(lr.log())
        os.kill(lr.daemon.pid, 1)
        ok, _ = poll(lambda: "reload" in lr.log()[mark:], 5.0)
        self.assertTrue(ok)
        new = lr.log()[mark:]
        self.assertNotRegex(new, r"lorelay\.ini reloaded")

    def test_refused_files_keep_everything(self):
        p1, p2 = free_ports(2)
        lr = self.lr = MultiLorelay(2, n_args=0, tag="lrs")
        a, b = lr.names
        good = section("g", a) + section("h", b)
        lr.write_config(good)
        lr.start(wait=False)
        lr.wait_guests(["g", "h"])
        bulk = lr.guest_server("bulk", "0.0.0.0", p1, "size=4096", "seed=3", ns=a)
        lr.guest_server("banner", "0.0.0.0", p2, "tag=h", ns=b)
        lr.wait_port("0.0.0.0:%d" % p1, "forwarding", name="g")
        lr.wait_port("0.0.0.0:%d" % p2, "forwarding", name="h")
        c = socket.create_connection(("127.0.0.1", p1), timeout=10)
        c.sendall(b"x" * 100)

        bad_ns = "%s-notns" % lr.netns
        bad_ns_path = "/run/netns/" + bad_ns
        open(bad_ns_path, "w").close()  # a plain file: not a namespace
        self.addCleanup(lambda: os.path.exists(bad_ns_path) and os.unlink(bad_ns_path))
        bad = [
            (section("g", a) + "[guest h]\ntransport = vsokc:3:5\n", "vsokc"),
            (section("g", a) + section("h", b, "tokenFile = /nonexistent/h.token"),
             "/nonexistent/h.token"),
            (section("g", a) + section("h", bad_ns), bad_ns),
        ]
        for text, needle in bad:
            lr.write_config(text)
            out = lr.reload()
            self.assertIn("was not applied", out)
            self.assertIn(needle, out)
            st = lr.status()
            self.assertFalse(st["config"]["last_reload"]["ok"])
            self.assertIn(needle, st["config"]["last_reload"]["error"])
            self.assertEqual([(g["name"], g["state"]) for g in st["guests"]],
                             [("g", "connected"), ("h", "connected")])
            self.assertNotIn("guest removed", out)
            self.assertBanner("127.0.0.1", p2, b"guest:h\n")
        self.assertTrue(lr.procs_named("lorelay-init", b), "h's lorelay-init was stopped")
        got = finish(c, b"y" * 100)
        self.assertEqual(len(got), 4096)
        self.assertEqual(bulk.wait_event("received")["bytes"], 200)

        lr.write_config(good)
        out = lr.reload()
        self.assertIn("reloaded", out)
        self.assertTrue(lr.status()["config"]["last_reload"]["ok"])

    def test_one_hop_follows_reload(self):
        p = free_ports(1)[0]
        lr = self.lr = MultiLorelay(1, n_args=0, tag="lrs")
        ns = lr.names[0]
        lr.write_config(section("g", ns))
        lr.start(wait=False)
        lr.wait_guests(["g"])
        lr.guest_server("banner", "0.0.0.0", p, "tag=g", ns=ns)
        lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="g")
        self.assertBanner("127.0.0.1", p, b"guest:g\n")
        ok, _ = poll(lambda: "handed to the host" in lr.log(), 3.0)
        self.assertTrue(ok, "the first connection did not take one hop:\n" + lr.log())
        lr.write_config(section("g", ns, "oneHop = false"))
        out = lr.reload()
        self.assertIn("oneHop = false for new connections", out)
        mark = len(lr.log())
        for _ in range(3):
            self.assertBanner("127.0.0.1", p, b"guest:g\n")
        self.assertNotIn("handed to the host", lr.log()[mark:])
        lr.write_config(section("g", ns))
        lr.reload()
        mark = len(lr.log())
        self.assertBanner("127.0.0.1", p, b"guest:g\n")
        ok, _ = poll(lambda: "handed to the host" in lr.log()[mark:], 3.0)
        self.assertTrue(ok, "oneHop back on: no connection took one hop")



if __name__ == "__main__":
    unittest.main()
