"""Close propagation on every transport (issue 16): a guest server's close
reaches the host client with every byte before it and then EOF within 1 s;
a host client's shutdown(SHUT_WR) reaches the guest server, which can still
answer; a guest server's half-close reaches the host client while the
client can still send; a reset is a reset, both ways.

LORELAY_CLOSE_TRANSPORT picks the transport (one ctest each):
  onehop  lorelayd --netns (the agent hands over the server socket)
  unix    lorelayd --guest unix:PATH, the agent in the test's namespace
  tcp     lorelayd --guest tcp:ADDR:PORT over a veth pair, with a key
  fc      lorelayd --guest fc:PATH:PORT through hvmux.HybridVsockMux, a
          scripted hybrid-vsock device that drops half-closes and turns the
          host's end of file into a full close of the guest's socket, as
          vhost-device-vsock and Firecracker do
  fcdeaf  the same with a device that passes on no close at all
The fc case fails without close notices (STREAM_CLOSE): the guest's FIN
never reaches the host, and the host's FIN resets the guest server."""

import hashlib
import json
import os
import random
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

from lrharness import PYTHON, Lorelay, LorelayTestCase, Proc, binary, free_port, poll  # noqa: F401
from hvmux import HybridVsockMux

TRANSPORT = os.environ.get("LORELAY_CLOSE_TRANSPORT", "onehop")
EOF_WITHIN = 1.0  # the bound: the close reaches the host client in <= 1 s


def pattern(seed, size):
    return random.Random(seed).randbytes(size)


def run(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("%s: rc %d: %s" % (" ".join(argv), r.returncode, r.stderr.strip()))
    return r


class GuestLorelay(Lorelay):
    """lorelayd --guest ADDR to an agent the test runs in its own namespace."""

    def __init__(self, transport, config=None):
        super().__init__(config=config, tag="lrc")
        self.transport = transport
        self.mux = None
        self.veth = None

    def start(self, wait=True, timeout=10.0):
        run("ip", "netns", "add", self.netns)
        run("ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "up")
        agent_path = os.path.join(self.tmpdir, "agent.sock")
        extra = []
        if self.transport == "tcp":
            self.veth, addr = self._veth()
            key = os.path.join(self.tmpdir, "key")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, secrets.token_hex(24).encode())
            os.close(fd)
            aport = random.randint(20000, 29999)
            listen = guest = "tcp:%s:%d" % (addr, aport)
            extra = ["--token-file", key]
        else:
            listen = "unix:" + agent_path
            guest = listen
        self.agent = self.spawn([binary("lorelay-agent"), "--listen", listen, "--log-level", "debug"]
                                + extra, "agent")
        if self.transport == "tcp":
            ready = lambda: self._tcp_up(addr, aport)  # noqa: E731
        else:
            ready = lambda: os.path.exists(agent_path) or None  # noqa: E731
        if poll(ready, 10.0)[0] is None:
            raise AssertionError("agent not listening within 10 s:\n" + self.agent.output())
        if self.transport in ("fc", "fcdeaf"):
            mux_path = os.path.join(self.tmpdir, "vsock.sock")
            self.mux = HybridVsockMux(mux_path, agent_path, deaf=self.transport == "fcdeaf")
            guest = "fc:%s:5000" % mux_path
        self.daemon_runs += 1
        log = os.path.join(self.tmpdir, "lorelayd.%d.log" % self.daemon_runs)
        self.log_paths.append(log)
        argv = [binary("lorelayd"), "--guest", guest, "--name", "close", "--socket", self.sock,
                "--log-level", "debug"] + extra
        if self.config_path:
            argv += ["-c", self.config_path]
        self.daemon = Proc(argv, log)
        if wait:
            self.wait_connected(timeout)
        return self.daemon

    @staticmethod
    def _tcp_up(addr, port):
        try:
            socket.create_connection((addr, port), timeout=0.5).close()
            return True
        except OSError:
            return None

    def _veth(self):
        """A veth pair to the namespace on a /30 no interface here uses."""
        used = run("ip", "-o", "-4", "addr").stdout
        for _ in range(50):
            net = "10.%d.%d." % (random.randint(200, 250), random.randint(0, 255))
            if net not in used:
                break
        tag = "%x" % (os.getpid() & 0xfffff)
        host_if, ns_if = "lrch" + tag, "lrcg" + tag
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        run("ip", "link", "set", ns_if, "netns", self.netns)
        run("ip", "addr", "add", net + "1/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        nse = ("ip", "netns", "exec", self.netns)
        run(*nse, "ip", "addr", "add", net + "2/30", "dev", ns_if)
        run(*nse, "ip", "link", "set", ns_if, "up")
        return host_if, net + "2"

    def cleanup(self, keep_tmp=False):
        if self.mux:
            self.mux.stop()
        super().cleanup(keep_tmp)
        if self.veth:
            run("ip", "link", "del", self.veth, check=False)


class ClosePropagation(LorelayTestCase):
    START = False

    def setUp(self):
        # reversePorts: the guest -> host cases (streams the host still opens).
        self.rev_port = free_port()
        config = "[lorelay]\nreversePorts = %d\n" % self.rev_port
        if TRANSPORT == "onehop":
            self.lr = Lorelay(config=config, tag="lrc")
        else:
            self.lr = GuestLorelay(TRANSPORT, config)
        self.addCleanup(self._teardown_lorelay)
        self.lr.start()

    def serve(self, mode, *extra):
        port = free_port()
        srv = self.lr.guest_server(mode, "0.0.0.0", port, *extra)
        self.lr.wait_port("0.0.0.0:%d" % port, "forwarding", timeout=5.0)
        return port, srv

    def read_to_eof(self, s, want=None, eof_within=None, what="the guest server's close"):
        """Reads until EOF. want: the bytes expected before it; the EOF must
        follow the last of them within eof_within seconds."""
        got = bytearray()
        s.settimeout(10.0)
        while want is None or len(got) < len(want):
            b = s.recv(1 << 20)
            if not b:
                break
            got += b
        if want is not None:
            self.assertEqual(len(got), len(want), "host client got %d of %d bytes" % (len(got), len(want)))
            self.assertTrue(bytes(got) == want, "bytes differ")
        t0 = time.monotonic()
        s.settimeout(eof_within or 10.0)
        try:
            rest = s.recv(1 << 20)
        except socket.timeout:
            self.fail("%s: no EOF within %.1f s of the last byte (%s)" % (what, eof_within or 10.0, TRANSPORT))
        el = time.monotonic() - t0
        if want is not None:
            self.assertEqual(rest, b"", "bytes after the expected ones")
        else:
            while rest:
                got += rest
                rest = s.recv(1 << 20)
        print("%s: %s: EOF %.1f ms after the last byte" % (TRANSPORT, what, el * 1000), file=sys.stderr)
        return bytes(got)

    def test_guest_server_close(self):
        """The issue's case (busybox httpd: answer, close): every byte, then EOF."""
        n = 300000
        port, srv = self.serve("sendclose", "size=%d" % n, "seed=5")
        for _ in range(3):  # a few connections: not a first-connection accident
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                self.read_to_eof(s, pattern(5, n), EOF_WITHIN)

    def test_guest_server_half_close_first(self):
        """The server shuts its write side first: the client sees EOF, then
        can still send, and the server gets every byte."""
        port, srv = self.serve("halffirst")
        payload = pattern(7, 200000)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            self.read_to_eof(s, b"banner-then-fin\n", EOF_WITHIN, "the guest server's half-close")
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            ev = srv.wait_event("received", timeout=10)
            self.assertEqual((ev["bytes"], ev["sha256"]), (len(payload), hashlib.sha256(payload).hexdigest()))
            self.read_to_eof(s, b"", EOF_WITHIN, "the guest server's close after its half-close")

    def test_host_client_half_close(self):
        """The client shuts its write side: the server sees EOF and can still
        answer; the client gets the answer, then EOF."""
        port, srv = self.serve("halfreply")
        payload = pattern(9, 150000)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            want = ("got %d %s\n" % (len(payload), hashlib.sha256(payload).hexdigest())).encode()
            self.read_to_eof(s, want, EOF_WITHIN, "the guest server's answer and close")
        ev = srv.wait_event("received", timeout=5)
        self.assertEqual(ev["bytes"], len(payload))

    def test_guest_server_reset(self):
        self.relay_path_unchecked = "the reset may come before the relay starts"
        port, srv = self.serve("rst")
        s = None
        try:
            with self.assertRaises(ConnectionResetError, msg="host client did not see the guest's reset"):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                b = s.recv(100)
                self.fail("clean EOF/data %r instead of a reset" % b)
        except socket.timeout:
            self.fail("host client hung instead of seeing the guest's reset")
        finally:
            if s is not None:
                s.close()

    def test_host_client_reset(self):
        port, srv = self.serve("recvreport")
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"some bytes")
        srv.wait_event("data", timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        ev, _ = poll(lambda: next((e for e in srv.events() if e["event"] in ("reset", "eof", "error")), None), 5.0)
        self.assertIsNotNone(ev, "guest server saw nothing within 5 s of the host client's reset")
        self.assertEqual(ev["event"], "reset", "guest server saw %s, not a reset" % ev)

    def test_no_stream_left(self):
        """After every client closed, no connection stays open on either side
        (a hybrid-vsock device closes nothing on a half-close)."""
        n = 1000
        port, srv = self.serve("sendclose", "size=%d" % n, "seed=1")
        agent = getattr(self.lr, "agent", None)
        fds = lambda: len(os.listdir("/proc/%d/fd" % agent.pid))  # noqa: E731
        before = fds() if agent else 0
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                self.read_to_eof(s, pattern(1, n), EOF_WITHIN)

        def drained():
            e = self.lr.port("0.0.0.0:%d" % port)
            return True if e and e.get("active") == 0 else None
        ok, _ = poll(drained, 3.0, 0.05)
        self.assertTrue(ok, "host connections still active 3 s after every client closed: %s"
                        % self.lr.port("0.0.0.0:%d" % port))
        if agent:
            ok, _ = poll(lambda: fds() <= before or None, 3.0, 0.05)
            self.assertTrue(ok, "the agent holds %d descriptors, %d before the connections"
                            % (fds(), before))

    # -- guest client -> host server (reversePorts): the same over reverse streams

    def host_server(self, mode, n=0):
        """One connection on host 127.0.0.1:rev_port, served in a thread."""
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.rev_port))
        ls.listen(4)
        ls.settimeout(15)
        out = {}

        def serve():
            try:
                c, _ = ls.accept()
                c.settimeout(15)
                if mode == "sendclose":
                    c.sendall(pattern(11, n))
                    c.close()
                else:  # halfreply: read to EOF, answer, then close
                    got = bytearray()
                    while True:
                        b = c.recv(1 << 20)
                        if not b:
                            break
                        got += b
                    out["received"] = len(got)
                    c.sendall(b"got %d\n" % len(got))
                    c.shutdown(socket.SHUT_WR)
                    c.recv(1)
                    c.close()
            except OSError as e:
                out["error"] = repr(e)
            finally:
                ls.close()
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        self.addCleanup(ls.close)
        return t, out

    def guest_client(self, send=0):
        """Connects from the guest to its localhost:rev_port, sends `send`
        bytes and shuts its write side if send, reads to EOF; its report."""
        r = subprocess.run(["ip", "netns", "exec", self.lr.netns, PYTHON, "-c", GUEST_CLIENT,
                            str(self.rev_port), str(send)],
                           capture_output=True, text=True, timeout=40)
        self.assertEqual(r.returncode, 0, "guest client failed: %s" % r.stderr)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def test_reverse_host_server_close(self):
        n = 200000
        t, out = self.host_server("sendclose", n)
        rep = self.guest_client()
        t.join(10)
        self.assertEqual(rep["bytes"], n, "guest client got %r" % rep)
        self.assertEqual(rep["sha256"], hashlib.sha256(pattern(11, n)).hexdigest())
        print("%s: reverse, the host server's close: EOF %.1f ms after the last byte"
              % (TRANSPORT, rep["eof_ms"]), file=sys.stderr)
        self.assertLessEqual(rep["eof_ms"], EOF_WITHIN * 1000, "no EOF within 1 s: %r" % rep)

    def test_reverse_guest_client_half_close(self):
        t, out = self.host_server("halfreply")
        rep = self.guest_client(send=120000)
        t.join(10)
        self.assertEqual(out.get("received"), 120000, "host server: %r" % out)
        self.assertEqual(rep["data"], "got 120000\n", "guest client got %r" % rep)
        self.assertLessEqual(rep["eof_ms"], EOF_WITHIN * 1000, "no EOF within 1 s: %r" % rep)


GUEST_CLIENT = r"""
import json, hashlib, socket, sys, time
port, send = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 10
while True:  # the published listener appears once the agent has REVERSE_SET
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
if send:
    s.sendall(b"r" * send)
    s.shutdown(socket.SHUT_WR)
got, last = bytearray(), time.monotonic()
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    got += b
    last = time.monotonic()
eof_ms = (time.monotonic() - last) * 1000
print(json.dumps({"bytes": len(got), "sha256": hashlib.sha256(got).hexdigest(), "eof_ms": eof_ms,
                  "data": got[:64].decode("latin-1")}))
"""


if __name__ == "__main__":
    unittest.main()
