"""Opt-in LAN exposure: listenAddress binds stand-ins on a host address
instead of loopback.

The "LAN" is a veth pair the test creates: its host end stays in the root
namespace (where lorelayd runs) with an address from a private range the
test picks and checks is unrouted here, its other end goes into a client
namespace. A client there reaches a guest's server through the host end's
address only when listenAddress says so: not by default, for the guest
whose [guest] section sets it and not for another, and for every guest
when [lorelay] sets it. Status shows the address; the log warns once.
Only addresses of namespaces and links the test created get traffic.
"""

import os
import random
import subprocess
import unittest

from lrharness import HERE, PYTHON, LorelayTestCase, MultiLorelay, free_ports, poll

# Runs in the client namespace: the harness's own client, one line of result.
CLIENT = """
import sys
sys.path.insert(0, %r)
from lrharness import fetch
try:
    print("GOT " + fetch(sys.argv[1], int(sys.argv[2]), timeout=3.0).decode().strip())
except OSError as e:
    print("ERR " + type(e).__name__)
""" % HERE


def run(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    if check and r.returncode != 0:
        raise AssertionError("%s: %s" % (" ".join(argv), r.stderr.strip()))
    return r


def pick_subnet():
    """A 10.x.y.0/30 nothing on this machine routes yet (only the default
    route would match it)."""
    for _ in range(50):
        net = "10.%d.%d" % (random.randint(200, 250), random.randint(0, 255))
        r = run("ip", "-4", "route", "show", "match", net + ".1", check=False)
        routes = [line for line in r.stdout.splitlines() if not line.startswith("default")]
        if not routes:
            return net
    raise AssertionError("no free private /30 found")


class ListenAddress(LorelayTestCase):
    START = False

    def setUp(self):
        super().setUp()
        self.lr.cleanup()
        tag = "%d%d" % (os.getpid() % 10000, random.randint(0, 99))
        self.client_ns = "lrc-%s" % tag
        self.veth_host, self.veth_client = "lrvh%s" % tag, "lrvc%s" % tag
        self.addCleanup(self.remove_link)
        net = pick_subnet()
        self.host_ip, self.client_ip = net + ".1", net + ".2"
        run("ip", "netns", "add", self.client_ns)
        run("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_client)
        run("ip", "link", "set", self.veth_client, "netns", self.client_ns)
        run("ip", "addr", "add", self.host_ip + "/30", "dev", self.veth_host)
        run("ip", "link", "set", self.veth_host, "up")
        nse = ("ip", "netns", "exec", self.client_ns)
        run(*nse, "ip", "addr", "add", self.client_ip + "/30", "dev", self.veth_client)
        run(*nse, "ip", "link", "set", self.veth_client, "up")
        run(*nse, "ip", "link", "set", "lo", "up")

    def remove_link(self):
        run("ip", "link", "del", self.veth_host, check=False)
        run("ip", "netns", "del", self.client_ns, check=False)

    def from_client(self, port):
        r = run("ip", "netns", "exec", self.client_ns, PYTHON, "-c", CLIENT, self.host_ip,
                str(port))
        return r.stdout.strip()

    def test_exposure_only_when_set(self):
        lr = self.lr = MultiLorelay(2, n_args=0, tag="lrl")
        a, b = lr.names
        pa, pb = free_ports(2)
        base = "[guest g]\nnetns = %s\n%s\n[guest h]\nnetns = %s\n"
        lr.write_config(base % (a, "", b))
        lr.start(wait=False)
        lr.wait_guests(["g", "h"])
        lr.guest_server("banner", "0.0.0.0", pa, "tag=g", ns=a)
        lr.guest_server("banner", "0.0.0.0", pb, "tag=h", ns=b)
        lr.wait_port("0.0.0.0:%d" % pa, "forwarding", name="g")
        lr.wait_port("0.0.0.0:%d" % pb, "forwarding", name="h")
        # Default: loopback only; the client on the "LAN" gets nothing.
        self.assertBanner("127.0.0.1", pa, b"guest:g\n")
        self.assertTrue(self.from_client(pa).startswith("ERR"))
        self.assertTrue(self.from_client(pb).startswith("ERR"))
        self.assertNotIn("listen_address", lr.guest(name="g"))

        # Guest g alone.
        lr.write_config(base % (a, "listenAddress = %s" % self.host_ip, b))
        out = lr.reload()
        self.assertIn("g: listenAddress = %s" % self.host_ip, out)
        lr.wait_port("0.0.0.0:%d" % pa, "forwarding", name="g",
                     pred=lambda p: p["host"] == ["%s:%d" % (self.host_ip, pa)])
        self.assertEqual(lr.guest(name="g").get("listen_address"), self.host_ip)
        got, _ = poll(lambda: self.from_client(pa) == "GOT guest:g", 3.0, 0.1)
        self.assertTrue(got, "client did not reach g through listenAddress")
        self.assertTrue(self.from_client(pb).startswith("ERR"))
        self.assertIn("listenAddress %s" % self.host_ip, lr.ctl("status").stdout)

        # Every guest, from [lorelay].
        lr.write_config("[lorelay]\nlistenAddress = %s\n" % self.host_ip + base % (a, "", b))
        lr.reload()
        lr.wait_port("0.0.0.0:%d" % pb, "forwarding", name="h",
                     pred=lambda p: p["host"] == ["%s:%d" % (self.host_ip, pb)])
        got, _ = poll(lambda: self.from_client(pb) == "GOT guest:h", 3.0, 0.1)
        self.assertTrue(got, "client did not reach h through [lorelay] listenAddress")
        self.assertEqual(self.from_client(pa), "GOT guest:g")

        # Off again: back to loopback.
        lr.write_config(base % (a, "", b))
        lr.reload()
        lr.wait_port("0.0.0.0:%d" % pa, "forwarding", name="g",
                     pred=lambda p: p["host"] == ["127.0.0.1:%d" % pa])
        self.assertTrue(self.from_client(pa).startswith("ERR"))
        self.assertBanner("127.0.0.1", pa, b"guest:g\n")


if __name__ == "__main__":
    unittest.main()
