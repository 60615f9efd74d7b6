"""UDP forwarding end to end: a guest UDP socket bound to a wildcard or
loopback address gets a UDP stand-in on the host loopback; each host
client address is a flow with its own transport stream; datagram
boundaries are kept both ways.

Real clients where there are some: dnsmasq in the guest queried with dig
from the host, over IPv4 and IPv6. Our own echo server (guestsrv.py
udpecho) where the test needs to know exactly what arrived: every size
from 1 to 65 507 bytes, 200 concurrent flows, idle timeout, the stand-in
going with the guest socket, udp = false. iperf3 -u both ways."""

import json
import random
import shutil
import socket
import subprocess
import time
import unittest

from lrharness import LorelayTestCase, free_port, poll, skip_or_fail


def udp_port(lr, guest_addr, timeout=3.0, **kw):
    """The status entry of a forwarded UDP socket (waits for it)."""
    return lr.wait_port(guest_addr, timeout=timeout,
                        pred=lambda p: p.get("proto") == "udp" and
                        (kw.get("pred") is None or kw["pred"](p)),
                        state=kw.get("state", "forwarding"))


def udp_entry(lr, guest_addr):
    for p in lr.ports():
        if p.get("guest") == guest_addr and p.get("proto") == "udp":
            return p
    return None


def echo_roundtrip(sock, addr, payload, timeout=3.0):
    sock.settimeout(timeout)
    sock.sendto(payload, addr)
    data, _ = sock.recvfrom(70000)
    return data


def client(fam=socket.AF_INET):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return s


class Udp(LorelayTestCase):

    def echo_server(self, host="0.0.0.0", port=None, *extra):
        port = port or free_port()
        srv = self.lr.guest_server("udpecho", host, port, *extra, stdin=True)
        guest = ("[%s]:%d" % (host, port)) if ":" in host else ("%s:%d" % (host, port))
        p, el = udp_port(self.lr, guest)
        return port, srv, guest, p

    def test_dns_dig_v4_v6(self):
        """dnsmasq on a high port in the guest, dig from the host."""
        for tool in ("dnsmasq", "dig"):
            if shutil.which(tool) is None:
                skip_or_fail(self, "%s is not installed (scripts/deps.sh test)" % tool)
        port = free_port()
        self.lr.spawn(["dnsmasq", "--keep-in-foreground", "--no-daemon", "--conf-file=/dev/null",
                       "--no-resolv", "--no-hosts", "--user=root", "--pid-file=",
                       "--port=%d" % port, "--address=/lorelay.test/10.1.2.3",
                       "--address=/lorelay.test/fd00::1234", "--log-facility=-"], "dnsmasq")
        p4, _ = udp_port(self.lr, "0.0.0.0:%d" % port, timeout=5.0)
        p6, _ = udp_port(self.lr, "[::]:%d" % port, timeout=5.0)
        self.assertEqual(p4["host"], ["127.0.0.1:%d" % port])
        self.assertIn("[::1]:%d" % port, p6["host"])
        for server, rtype, want in (("127.0.0.1", "A", "10.1.2.3"), ("::1", "A", "10.1.2.3"),
                                    ("127.0.0.1", "AAAA", "fd00::1234"),
                                    ("::1", "AAAA", "fd00::1234")):
            r = subprocess.run(["dig", "@" + server, "-p", str(port), "+short", "+notcp",
                                "+time=3", "+tries=2", "lorelay.test", rtype],
                               capture_output=True, text=True, timeout=20)
            self.assertEqual(r.stdout.strip(), want,
                             "dig @%s %s: rc %d out %r err %r" % (server, rtype, r.returncode,
                                                                 r.stdout, r.stderr))
        p4 = udp_entry(self.lr, "0.0.0.0:%d" % port)
        self.assertGreaterEqual(p4["connections"], 1)
        self.assertGreater(p4["bytes_to_host"], 0)
        self.assertIn("drops", p4)

    def test_sizes_boundaries(self):
        """Every datagram comes back whole and alone, 1 .. 65 507 bytes."""
        port, _, guest, _ = self.echo_server()
        rnd = random.Random(7)
        sizes = list(range(1, 80)) + [rnd.randint(80, 65507) for _ in range(60)] + \
            [1471, 1472, 1473, 8192, 9000, 16384, 32768, 65000, 65506, 65507]
        s = client()
        for i, n in enumerate(sizes):
            payload = bytes([i & 0xFF]) * 4 + rnd.randbytes(n - 4) if n >= 4 else bytes([i]) * n
            got = echo_roundtrip(s, ("127.0.0.1", port), payload)
            self.assertEqual(len(got), n, "datagram %d of %d bytes came back as %d" % (i, n, len(got)))
            self.assertEqual(got, payload, "datagram %d of %d bytes altered" % (i, n))
        # A burst without waiting: boundaries kept when the stream batches.
        burst = [rnd.randbytes(rnd.randint(1, 3000)) for _ in range(100)]
        for b in burst:
            s.sendto(b, ("127.0.0.1", port))
        got = []
        s.settimeout(3.0)
        while len(got) < len(burst):
            got.append(s.recvfrom(70000)[0])
        self.assertEqual(got, burst)
        # A client sending the empty datagram gets it back, as UDP allows.
        self.assertEqual(echo_roundtrip(s, ("127.0.0.1", port), b""), b"")
        p = udp_entry(self.lr, guest)
        self.assertEqual(p["active"], 1, "one client address is one flow: %r" % p)
        self.assertEqual(p["drops"], 0)
        # One hop (a --netns guest): lorelayd itself holds the flow's
        # socket connected to the guest server; the agent holds none.
        ss = self.lr.netns_exec("ss", "-uanpH", "dport = :%d" % port).stdout
        self.assertIn("lorelayd", ss, "no one-hop flow socket: " + ss)
        self.assertNotIn("lorelay-agent", ss, "the agent is still in the data path: " + ss)

    def test_ipv6_dualstack(self):
        port, _, guest, p = self.echo_server("::", None, "v6only=0")
        self.assertEqual(sorted(p["host"]), sorted(["127.0.0.1:%d" % port, "[::1]:%d" % port]))
        for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = client(fam)
            self.assertEqual(echo_roundtrip(s, (host, port), b"x" * 65507), b"x" * 65507)
            s.close()

    def test_200_flows(self):
        """200 client addresses at once: 200 flows, every reply to its own client."""
        port, srv, guest, _ = self.echo_server()
        n = 200
        socks = [client() for _ in range(n)]
        try:
            for rnd in range(3):
                for i, s in enumerate(socks):
                    s.sendto(b"%d:%d:%s" % (i, rnd, b"p" * (i % 50)), ("127.0.0.1", port))
                for i, s in enumerate(socks):
                    s.settimeout(5.0)
                    data, _ = s.recvfrom(70000)
                    self.assertEqual(data, b"%d:%d:%s" % (i, rnd, b"p" * (i % 50)),
                                     "client %d got another client's reply" % i)
            p = udp_entry(self.lr, guest)
            self.assertEqual(p["active"], n, p)
            self.assertEqual(p["connections"], n, p)
            srv.send("peers")
            ev = srv.wait_event("peers", timeout=5.0)
            self.assertEqual(ev["n"], n, "the guest server saw %d peers" % ev["n"])
        finally:
            for s in socks:
                s.close()

    def test_standin_gone_with_guest_socket(self):
        port, srv, guest, _ = self.echo_server()
        s = client()
        s.connect(("127.0.0.1", port))
        s.settimeout(3.0)
        s.send(b"hello")
        self.assertEqual(s.recv(100), b"hello")
        srv.send("quit")
        self.lr.wait_port_absent(guest, timeout=2.0)
        # Nothing is bound there any more: the host kernel refuses.
        refused = False
        for _ in range(3):
            try:
                s.send(b"anyone?")
                s.recv(100)
            except ConnectionRefusedError:
                refused = True
                break
            except socket.timeout:
                pass
        self.assertTrue(refused, "host port %d still answers after the guest socket closed" % port)


class UdpIperf(LorelayTestCase):

    def test_iperf3_udp_both_directions(self):
        """iperf3 -u through the forward, client to server and -R.

        iperf3 3.12 binds its UDP socket only when a test starts and at
        once tells the client (over its TCP control connection) to send;
        the client's first datagram then races the UDP scan, and it has no
        retry. A UDP server that lives longer than one exchange (dnsmasq, a
        game server) never meets this. So the guest also keeps a [::]:P UDP
        socket with SO_REUSEADDR (iperf3 sets it too), which keeps the
        stand-in up; the kernel hands datagrams to the socket bound last,
        iperf3's."""
        if shutil.which("iperf3") is None:
            skip_or_fail(self, "iperf3 is not installed (scripts/deps.sh test)")
        port = free_port()
        self.lr.spawn(["iperf3", "-s", "-p", str(port)], "iperf3-server")
        self.lr.guest_server("udpecho", "::", port, "v6only=0", "reuse=1", stdin=True)
        udp_port(self.lr, "[::]:%d" % port, timeout=5.0)
        self.lr.wait_port("[::]:%d" % port, pred=lambda p: p.get("proto") == "tcp", timeout=5.0)

        for extra in ([], ["-R"]):
            r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-u", "-b", "100M",
                                "-l", "1400", "-t", "2", "--json"] + extra,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, "iperf3 %s failed: %s %s" % (extra, r.stdout[-2000:],
                                                                          r.stderr))
            doc = json.loads(r.stdout)
            s = doc["end"]["sum"]
            print("MEASURE iperf3 -u %s: %.1f Mbit/s, lost %d/%d (%.2f %%)"
                  % (" ".join(extra) or "(to guest)", s["bits_per_second"] / 1e6,
                     s["lost_packets"], s["packets"], s["lost_percent"]))
            self.assertGreater(s["packets"], 1000)
            self.assertLess(s["lost_percent"], 5.0, "iperf3 %s lost %.2f %%" % (extra, s["lost_percent"]))


class UdpIdle(LorelayTestCase):
    CONFIG = "[lorelay]\nudpIdleTimeout = 2\n"

    def test_idle_timeout(self):
        port = free_port()
        self.lr.guest_server("udpecho", "0.0.0.0", port, stdin=True)
        guest = "0.0.0.0:%d" % port
        udp_port(self.lr, guest)
        s = client()
        self.assertEqual(echo_roundtrip(s, ("127.0.0.1", port), b"one"), b"one")
        self.assertEqual(udp_entry(self.lr, guest)["active"], 1)
        t0 = time.monotonic()
        v, _ = poll(lambda: udp_entry(self.lr, guest)["active"] == 0 or None, 6.0, 0.05)
        self.assertTrue(v, "flow still open 6 s after 2 s of silence: %r" % udp_entry(self.lr, guest))
        el = time.monotonic() - t0
        self.assertGreaterEqual(el, 1.5, "flow closed after %.2f s, before udpIdleTimeout" % el)
        # The same client again: a new flow, and it works.
        self.assertEqual(echo_roundtrip(s, ("127.0.0.1", port), b"two"), b"two")
        p = udp_entry(self.lr, guest)
        self.assertEqual((p["connections"], p["active"]), (2, 1), p)


class UdpBudget(LorelayTestCase):
    CONFIG = "[lorelay]\nmaxUdpFlowsPerPort = 5\n"

    def test_flows_per_port_capped(self):
        """Past maxUdpFlowsPerPort new clients' datagrams are dropped (one
        log line), the flows inside the budget keep working, and a client
        gets in once a flow is gone."""
        port = free_port()
        self.lr.guest_server("udpecho", "0.0.0.0", port, stdin=True)
        guest = "0.0.0.0:%d" % port
        udp_port(self.lr, guest)
        socks = [client() for _ in range(8)]
        try:
            answered = []
            for i, s in enumerate(socks):
                s.settimeout(1.0)
                s.sendto(b"c%d" % i, ("127.0.0.1", port))
                try:
                    answered.append(s.recvfrom(100)[0] == b"c%d" % i)
                except socket.timeout:
                    answered.append(False)
            self.assertEqual(answered, [True] * 5 + [False] * 3)
            p = udp_entry(self.lr, guest)
            self.assertEqual(p["active"], 5, p)
            self.assertGreaterEqual(p["drops"], 3, p)
            self.assertIn("maxUdpFlowsPerPort (5)", self.lr.log())
            for s in socks[:5]:  # the admitted flows still work
                s.sendto(b"again", ("127.0.0.1", port))
                self.assertEqual(s.recvfrom(100)[0], b"again")
        finally:
            for s in socks:
                s.close()


class UdpOff(LorelayTestCase):
    CONFIG = "[lorelay]\nudp = false\n"

    def test_udp_false(self):
        port = free_port()
        self.lr.guest_server("udpecho", "0.0.0.0", port, stdin=True)
        tport = free_port()
        self.lr.guest_server("banner", "0.0.0.0", tport, "tag=t")
        self.lr.wait_port("0.0.0.0:%d" % tport, "forwarding")
        self.lr.settle()  # scans after the UDP bind have reached the host
        self.assertIsNone(udp_entry(self.lr, "0.0.0.0:%d" % port),
                          "udp = false, yet the UDP socket is in status")
        self.assertFalse(any(p.get("proto") == "udp" for p in self.lr.ports()))


if __name__ == "__main__":
    unittest.main()
