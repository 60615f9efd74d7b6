"""Many guests in one lorelayd: one host daemon serves every guest its
configuration names.

- `lorelayd -c FILE` with only [guest NAME] sections starts every guest;
  each has its own status entry, and its section's keys override [lorelay]
  for it alone.
- `hostAddress = 127.0.0.N` puts a guest's stand-ins on its own loopback
  address: two guests serving the same port are both reachable, each on
  its address, and that guest gets no [::1] stand-ins.
- Two guests claiming the same host port: the first wins, the other shows
  "conflict", and takes the port over once the first one's listener closed
  and the port stayed free for conflictGraceSeconds.
- --netns repeated on the command line, together with sections.
"""

import sys
import unittest

from lrharness import LorelayTestCase, MultiLorelay, free_ports, poll, try_connect


class ManyGuests(LorelayTestCase):
    START = False

    def setUp(self):
        super().setUp()
        self.lr.cleanup()  # replace the single-guest instance

    def multi(self, n, n_args=0):
        self.lr = MultiLorelay(n, n_args=n_args)
        return self.lr

    def test_sections_host_address_and_conflict(self):
        lr = self.multi(3)
        a, b, c = lr.names
        p, p_ign = free_ports(2)
        lr.write_config(
            "[lorelay]\nconflictGraceSeconds = 2\n\n"
            "[guest web]\nnetns = %s\n\n"
            "[guest api]\nnetns = %s\nhostAddress = 127.0.0.7\n\n"
            "[guest db]\nnetns = %s\nignorePorts = %d\n" % (a, b, c, p_ign))
        lr.start(wait=False)
        lr.wait_guests(["web", "api", "db"])  # named by their sections
        st = lr.status()
        self.assertEqual([g["name"] for g in st["guests"]], ["web", "api", "db"])
        self.assertEqual(lr.guest(st, "api").get("host_address"), "127.0.0.7")

        # web and api both serve p: each on its own address.
        lr.guest_server("banner", "::", p, "v6only=0", "tag=web", ns=a)
        lr.guest_server("banner", "0.0.0.0", p, "tag=api", ns=b)
        w, _ = lr.wait_port("[::]:%d" % p, "forwarding", name="web")
        self.assertEqual(sorted(w["host"]), sorted(["127.0.0.1:%d" % p, "[::1]:%d" % p]))
        ap, _ = lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="api")
        self.assertEqual(ap["host"], ["127.0.0.7:%d" % p])
        self.assertBanner("127.0.0.1", p, b"guest:web\n")
        self.assertBanner("::1", p, b"guest:web\n")
        self.assertBanner("127.0.0.7", p, b"guest:api\n")
        # A dual-stack listener of a hostAddress guest: IPv4 only (::1 is shared).
        lr.guest_server("banner", "::", p_ign, "v6only=0", "tag=api2", ns=b)
        ap2, _ = lr.wait_port("[::]:%d" % p_ign, "forwarding", name="api")
        self.assertEqual(ap2["host"], ["127.0.0.7:%d" % p_ign])

        # db's own ignorePorts: p_ign is ignored for db alone.
        lr.guest_server("banner", "0.0.0.0", p_ign, "tag=db-ign", ns=c)
        lr.wait_port("0.0.0.0:%d" % p_ign, "ignored", name="db")

        # db wants p too, on the default loopback: web has it, db waits.
        srv_db = lr.guest_server("banner", "0.0.0.0", p, "tag=db", ns=c)
        lr.wait_port("0.0.0.0:%d" % p, "conflict", name="db")
        self.assertBanner("127.0.0.1", p, b"guest:web\n")
        self.assertIn("conflict", lr.log())
        # web's listener closes: db takes the port over once it stayed free
        # for conflictGraceSeconds (a guest restarting its server keeps it).
        for proc in list(lr.procs):
            if "tag=web" in proc.argv:
                proc.stop()
        _, took = lr.wait_port("0.0.0.0:%d" % p, "forwarding", name="db", timeout=7.0)
        print("db took the port over %.0f ms after web's listener closed" % (took * 1000),
              file=sys.stderr)
        self.assertGreaterEqual(took, 1.5, "db took web's port before the 2 s grace")
        self.assertIn("taken by guest db", lr.log())
        ok, _ = poll(lambda: try_connect("127.0.0.1", p) is None, 3.0)
        self.assertBanner("127.0.0.1", p, b"guest:db\n")
        self.assertBanner("127.0.0.7", p, b"guest:api\n")
        srv_db.stop()

    def test_netns_repeated_with_sections(self):
        lr = self.multi(3, n_args=2)
        a, b, c = lr.names
        p = free_ports(1)[0]
        lr.write_config("[lorelay]\nipv6 = false\n\n[guest third]\nnetns = %s\n"
                        "hostAddress = 127.0.0.9\n" % c)
        lr.start(wait=False)
        lr.wait_guests([a, b, "third"])
        for i, ns in enumerate((a, b)):
            srv = lr.guest_server("banner", "0.0.0.0", p, "tag=%d" % i, ns=ns)
            lr.wait_port("0.0.0.0:%d" % p, "forwarding", name=ns)
            self.assertBanner("127.0.0.1", p, ("guest:%d\n" % i).encode())
            srv.stop()
            lr.wait_port_absent("0.0.0.0:%d" % p, name=ns)
        lr.guest_server("banner", "::", p, "v6only=0", "tag=3", ns=c)
        w, _ = lr.wait_port("[::]:%d" % p, "forwarding", name="third")
        self.assertEqual(w["host"], ["127.0.0.9:%d" % p])  # [lorelay] ipv6=false applies
        self.assertBanner("127.0.0.9", p, b"guest:3\n")

    def test_bad_sections_refused(self):
        lr = self.multi(1)
        lr.write_config("[guest x]\nnetns = %s\nhostAddress = 10.0.0.1\n\n"
                        "[guest y]\nport = 1\n" % lr.names[0])
        lr.start(wait=False)
        rc = lr.daemon.p.wait(10)
        self.assertNotEqual(rc, 0)
        log = lr.log()
        self.assertIn("lorelay.ini:3: hostAddress = '10.0.0.1'", log)
        self.assertIn("[guest y] needs exactly one of netns", log)
        self.assertEqual(rc, 2)  # a bad file is a usage error
        # A file without any guest, and no --guest/--netns: lorelayd waits
        # (test_config_strict covers a reload adding them).
        lr.write_config("[lorelay]\nipv6 = true\n")
        lr.start(wait=False)
        ok, _ = poll(lambda: lr._status_or_none() is not None, 10.0)
        self.assertTrue(ok, lr.log())
        self.assertEqual(lr.status()["guests"], [])
        self.assertIn("no guest configured: waiting", lr.log())


if __name__ == "__main__":
    unittest.main()
