"""Scenario 12: lorelayctl. The table names each port and its state; --json
parses and has exactly the status shape of docs/protocol.md and types; bad usage and a
missing endpoint are one-line errors with a non-zero exit."""

import json
import unittest

from lrharness import LorelayTestCase, binary, free_ports
import subprocess

PORT_KEYS = {"proto": str, "guest": str, "host": list, "state": str, "connections": int,
             "bytes_to_guest": int, "bytes_to_host": int}
GUEST_KEYS = {"name": str, "transport": str, "state": str, "detection": str, "ports": list}


class Lorelayctl(LorelayTestCase):

    def test_table_and_json(self):
        lr = self.lr
        p4, p6 = free_ports(2)
        lr.guest_server("banner", "0.0.0.0", p4, "tag=t")
        lr.guest_server("banner", "::", p6, "v6only=0", "tag=t6")
        lr.wait_port("0.0.0.0:%d" % p4, "forwarding")
        lr.wait_port("[::]:%d" % p6, "forwarding")
        self.assertBanner("127.0.0.1", p4, b"guest:t\n")

        r = lr.ctl("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        for port in (p4, p6):
            row = [l for l in lines if str(port) in l]
            self.assertTrue(row, "port %d not in table:\n%s" % (port, r.stdout))
            self.assertIn("forwarding", row[0], "state missing from row: %r" % row[0])
        self.assertIn(lr.netns, r.stdout)

        r = lr.ctl("status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(set(doc), {"config", "guests"})
        self.assertEqual(set(doc["config"]), {"path", "loaded_at", "last_reload"})
        self.assertIsInstance(doc["guests"], list)
        self.assertEqual(len(doc["guests"]), 1)
        g = doc["guests"][0]
        for k, t in GUEST_KEYS.items():
            self.assertIn(k, g)
            self.assertIsInstance(g[k], t, k)
        self.assertEqual(g["state"], "connected")
        self.assertIn(g["detection"], ("ebpf", "poll"))
        self.assertIn(lr.netns, g["transport"] + g["name"])
        ports = {p["guest"]: p for p in g["ports"]}
        self.assertIn("0.0.0.0:%d" % p4, ports)
        self.assertIn("[::]:%d" % p6, ports)
        for p in g["ports"]:
            for k, t in PORT_KEYS.items():
                self.assertIn(k, p)
                self.assertIsInstance(p[k], t, "%s in %s" % (k, p))
                self.assertNotIsInstance(p[k], bool)
            self.assertEqual(p["proto"], "tcp")
            self.assertIn(p["state"], ("forwarding", "conflict", "remapped", "ignored"))
            for h in p["host"]:
                self.assertIsInstance(h, str)
        self.assertEqual(ports["0.0.0.0:%d" % p4]["host"], ["127.0.0.1:%d" % p4])
        self.assertGreaterEqual(ports["0.0.0.0:%d" % p4]["connections"], 1)

    def test_bad_usage(self):
        r = subprocess.run([binary("lorelayctl"), "--socket", self.lr.sock, "frobnicate"],
                           capture_output=True, text=True, timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("frobnicate", r.stderr)
        r = subprocess.run([binary("lorelayctl"), "--socket", self.lr.sock + ".missing", "status"],
                           capture_output=True, text=True, timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertTrue(r.stderr.strip(), "no error message for a missing endpoint")
        self.assertLessEqual(len(r.stderr.strip().splitlines()), 2, r.stderr)


if __name__ == "__main__":
    unittest.main()
