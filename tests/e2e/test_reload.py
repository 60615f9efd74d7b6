"""Live configuration: SIGHUP makes lorelayd read its config file again.

- Ports the new file allows, ignores or denies follow at once; a relayed
  connection on a port that stays forwarded is untouched (its stand-in is
  not even reopened).
- Guests added to or removed from the file start or stop (a removed
  namespace guest's stand-ins close and its lorelay-init stops).
- A file with an error changes nothing, and the log names the line.
- A remapped port moves back to the port it wanted once that port frees.
- A guest's hostAddress changed by a reload moves its stand-ins.
"""

import socket
import unittest

from lrharness import (LorelayTestCase, MultiLorelay, finish, free_ports, poll, try_connect,
                       wait_refused)


def section(name, ns, extra=""):
    return "[guest %s]\nnetns = %s\n%s\n" % (name, ns, extra)


class Reload(LorelayTestCase):
    START = False

    def setUp(self):
        super().setUp()
        self.lr.cleanup()

    def multi(self, n, config):
        lr = self.lr = MultiLorelay(n, n_args=0, tag="lrr")
        lr.write_config(config(lr.names))
        lr.start(wait=False)
        return lr

    def test_rules_follow_and_connections_stay(self):
        p1, p2, p3 = free_ports(3)
        lr = self.multi(1, lambda n: section("g", n[0]))
        ns = lr.names[0]
        lr.wait_guests(["g"])
        bulk = lr.guest_server("bulk", "0.0.0.0", p1, "size=4096", "seed=5", ns=ns)
        lr.guest_server("banner", "0.0.0.0", p2, "tag=two", ns=ns)
        lr.guest_server("banner", "0.0.0.0", p3, "tag=three", ns=ns)
        for p in (p1, p2, p3):
            lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="g")

        # A connection open across the reloads.
        c = socket.create_connection(("127.0.0.1", p1), timeout=10)
        c.sendall(b"a" * 1000)

        lr.write_config("[lorelay]\nforwardPorts = %d,%d\nignorePorts = %d\n\n" % (p1, p2, p2)
                        + section("g", ns))
        lr.reload()
        lr.wait_port("0.0.0.0:%d" % p2, "ignored", name="g")
        lr.wait_port("0.0.0.0:%d" % p3, "denied", name="g")
        self.assertRefused("127.0.0.1", p2)
        self.assertRefused("127.0.0.1", p3)
        self.assertEqual(lr.port("0.0.0.0:%d" % p1, "g")["state"], "forwarding")
        self.assertNotIn("stopped forwarding host 127.0.0.1:%d" % p1, lr.log())

        # And back: everything forwarded again.
        lr.write_config(section("g", ns))
        lr.reload()
        for p in (p2, p3):
            lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="g")
        self.assertBanner("127.0.0.1", p2, b"guest:two\n")
        self.assertBanner("127.0.0.1", p3, b"guest:three\n")

        # The connection opened before both reloads still relays both ways.
        got = finish(c, b"b" * 1000)
        self.assertEqual(len(got), 4096)
        ev = bulk.wait_event("received")
        self.assertEqual(ev["bytes"], 2000)
        self.assertNotIn("stopped forwarding host 127.0.0.1:%d" % p1, lr.log())

    def test_guests_added_and_removed(self):
        p = free_ports(1)[0]
        lr = self.multi(2, lambda n: section("one", n[0]))
        a, b = lr.names
        lr.wait_guests(["one"])
        lr.guest_server("banner", "0.0.0.0", p, "tag=one", ns=a)
        lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="one")

        lr.write_config(section("one", a) + section("two", b, "hostAddress = 127.0.0.6"))
        lr.reload()
        lr.wait_guests(["one", "two"])
        lr.guest_server("banner", "0.0.0.0", p, "tag=two", ns=b)
        lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="two")
        self.assertBanner("127.0.0.6", p, b"guest:two\n")
        self.assertBanner("127.0.0.1", p, b"guest:one\n")

        lr.write_config(section("two", b, "hostAddress = 127.0.0.6"))
        lr.reload()
        ok, _ = poll(lambda: [g["name"] for g in lr.status()["guests"]] == ["two"], 3.0)
        self.assertTrue(ok, "guest one still in status: %s" % lr.status())
        self.assertIsNotNone(wait_refused("127.0.0.1", p, 3.0))
        self.assertBanner("127.0.0.6", p, b"guest:two\n")
        ok, _ = poll(lambda: not lr.procs_named("lorelay-init", a), 5.0)
        self.assertTrue(ok, "lorelay-init of the removed guest still runs")

        # Back again: the namespace is served anew.
        lr.write_config(section("one", a) + section("two", b, "hostAddress = 127.0.0.6"))
        lr.reload()
        lr.wait_guests(["one", "two"])
        lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="one")
        self.assertBanner("127.0.0.1", p, b"guest:one\n")

    def test_bad_file_changes_nothing(self):
        p = free_ports(1)[0]
        lr = self.multi(1, lambda n: "[lorelay]\nignorePorts = %d\n\n" % p + section("g", n[0]))
        ns = lr.names[0]
        lr.wait_guests(["g"])
        lr.guest_server("banner", "0.0.0.0", p, "tag=x", ns=ns)
        lr.wait_port("0.0.0.0:%d" % p, "ignored", name="g")

        lr.write_config("[lorelay]\nignorePorts =\nipv6 = flase\n\n" + section("g", ns))
        out = lr.reload()
        self.assertIn("lorelay.ini:3: ipv6 = 'flase' is not a boolean", out)
        self.assertIn("was not applied", out)
        lr.settle(ns=ns, name="g")  # the agent's reports since the reload have arrived
        self.assertEqual(lr.port("0.0.0.0:%d" % p, "g")["state"], "ignored")
        self.assertRefused("127.0.0.1", p)

        # A broken section is a bad file too: guest g stays.
        lr.write_config("[guest g]\nnetns = %s\n[guest h]\ntokenFile = /nonexistent\n" % ns)
        out = lr.reload()
        self.assertIn("[guest h] needs exactly one of netns", out)
        self.assertEqual([g["name"] for g in lr.status()["guests"]], ["g"])
        self.assertEqual(lr.port("0.0.0.0:%d" % p, "g")["state"], "ignored")

    def test_remapped_port_moves_back(self):
        p = free_ports(1)[0]
        lr = self.multi(1, lambda n: "[lorelay]\nremapOnConflict = true\nconflictRetryMs = 200\n"
                        "conflictGraceSeconds = 1\n\n" + section("g", n[0]))
        ns = lr.names[0]
        lr.wait_guests(["g"])
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", p))
        holder.listen(1)
        try:
            lr.guest_server("banner", "0.0.0.0", p, "tag=r", ns=ns)
            r, _ = lr.wait_port("0.0.0.0:%d" % p, "remapped", name="g")
            other = int(r["host"][0].rsplit(":", 1)[1])
            self.assertNotEqual(other, p)
            self.assertBanner("127.0.0.1", other, b"guest:r\n")
        finally:
            holder.close()
        f, took = lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="g", timeout=4.0)
        self.assertEqual(f["host"], ["127.0.0.1:%d" % p])
        self.assertBanner("127.0.0.1", p, b"guest:r\n")
        self.assertIsInstance(try_connect("127.0.0.1", other), ConnectionRefusedError)

    def test_host_address_moves(self):
        p = free_ports(1)[0]
        lr = self.multi(1, lambda n: section("g", n[0]))
        ns = lr.names[0]
        lr.wait_guests(["g"])
        bulk = lr.guest_server("bulk", "0.0.0.0", p, "size=100", "seed=1", ns=ns)
        lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="g")
        c = socket.create_connection(("127.0.0.1", p), timeout=10)
        c.sendall(b"z" * 10)
        lr.write_config(section("g", ns, "hostAddress = 127.0.0.5"))
        lr.reload()
        lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="g",
                     pred=lambda q: q["host"] == ["127.0.0.5:%d" % p])
        self.assertIsNotNone(wait_refused("127.0.0.1", p, 3.0))
        # The open connection does not care where the stand-in went.
        got = finish(c)
        self.assertEqual(len(got), 100)
        self.assertEqual(bulk.wait_event("received")["bytes"], 10)


if __name__ == "__main__":
    unittest.main()
