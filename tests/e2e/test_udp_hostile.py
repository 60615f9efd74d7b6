"""A hostile agent on UDP flows (lrpeer FakeAgent against a real lorelayd),
and a hostile host (FakeHost against a real agent):
a datagram frame longer than 65 507 bytes, a frame cut off by the end of
the stream, and a flow whose agent stops reading. Each must close (or
drop datagrams on) that one flow, with one log line naming it, and
leave lorelayd, the stand-in and every other flow working."""

import socket
import struct
import threading
import time
import unittest

from lrhostile import HostileTestCase
from lrharness import LorelayTestCase, free_port, poll
import lrpeer


def flow_agent(st, msg):
    """Serves one UDP flow by what the client's first datagram asks for."""
    try:
        if not msg.get("flags", 0) & lrpeer.OPEN_UDP:
            st.close()
            return
        st.send_frame(lrpeer.OPEN_RESULT, lrpeer.enc_open_result(lrpeer.ERR_OK, ""))
        buf = bytearray(st.parser.buf)
        st.sock.settimeout(10)
        while True:
            for d in lrpeer.dgram_split(buf):
                if d == b"oversize":
                    st.sock.sendall(struct.pack(">H", 65508) + b"x" * 100)
                elif d == b"truncate":
                    st.sock.sendall(lrpeer.enc_dgram(b"ok-before") + struct.pack(">H", 1000) +
                                    b"y" * 10)
                    st.sock.shutdown(socket.SHUT_WR)
                elif d == b"stall":
                    time.sleep(8)  # reads nothing: the host's stream fills up
                    return
                else:
                    st.sock.sendall(lrpeer.enc_dgram(b"echo:" + d))
            b = st.sock.recv(1 << 16)
            if not b:
                return
            buf += b
    except OSError:
        pass
    finally:
        try:
            st.close()
        except OSError:
            pass


class UdpHostileAgent(HostileTestCase):
    AGENT = {"data": flow_agent}
    LOG_LEVEL = "debug"

    def test_bad_datagram_frames(self):
        port = free_port()
        hello = self.fg.agent.hellos[-1]
        self.assertTrue(hello.get("caps", 0) & lrpeer.CAP_UDP, "HELLO without CAP_UDP: %r" % hello)
        self.ctl.send(lrpeer.frame(lrpeer.LISTENER_ADD, lrpeer.enc_listener(
            "0.0.0.0", port, flags=lrpeer.LISTENER_UDP)))

        def forwarding():
            p = self.fg.ports().get("0.0.0.0:%d" % port)
            return p if p and p.get("proto") == "udp" and p.get("state") == "forwarding" else None
        p, _ = poll(forwarding, 5.0, 0.02)
        self.assertIsNotNone(p, "UDP listener not forwarded: %r" % self.fg.status_or_none())

        def ask(what, expect_reply=True):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(3.0)
            s.sendto(what, ("127.0.0.1", port))
            try:
                return s, s.recvfrom(70000)[0] if expect_reply else None
            except socket.timeout:
                return s, None

        good, r = ask(b"hi")
        self.assertEqual(r, b"echo:hi")
        # Oversized: nothing of it reaches the client; that flow closes.
        s1, r = ask(b"oversize")
        self.assertIsNone(r, "an oversized frame reached the client: %r" % (r,))
        # Truncated: the whole datagram before it arrives, the cut one never.
        s2, r = ask(b"truncate")
        self.assertEqual(r, b"ok-before")
        s2.settimeout(1.0)
        with self.assertRaises(socket.timeout):
            s2.recvfrom(70000)
        # A flow whose agent stops reading: its datagrams are dropped and
        # counted once the stream's bounded queue is full; the others flow.
        s3 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s3.sendto(b"stall", ("127.0.0.1", port))
        time.sleep(0.2)
        for i in range(3000):
            s3.sendto(b"s" * 1000, ("127.0.0.1", port))
            if i % 200 == 0:
                good.sendto(b"during-%d" % i, ("127.0.0.1", port))
                self.assertEqual(good.recvfrom(70000)[0], b"echo:during-%d" % i,
                                 "a stalled flow blocked another")

        def flows_settled():
            p = self.fg.ports().get("0.0.0.0:%d" % port)
            return p if p and p["active"] <= 3 else None
        p, _ = poll(flows_settled, 10.0, 0.05)
        self.assertIsNotNone(p, "bad flows still open: %r" % self.fg.ports())
        log = self.fg.log()
        self.assertIn("length over 65507", log)
        self.assertIn("truncated frame", log)
        # The first flow and the stand-in are unharmed; a new flow works too.
        good.sendto(b"again", ("127.0.0.1", port))
        self.assertEqual(good.recvfrom(70000)[0], b"echo:again")
        s4, r = ask(b"new")
        self.assertEqual(r, b"echo:new")
        self.assertTrue(self.fg.alive())
        p = self.fg.ports().get("0.0.0.0:%d" % port)
        self.assertGreater(p["drops"], 0, "a stalled flow's stream, yet no drops: %r" % p)
        for s in (good, s1, s2, s3, s4):
            s.close()


class UdpHostileHost(LorelayTestCase):
    """The other way round: a fake host against the real agent's UDP flows."""

    def flow(self, host, port):
        st, res = host.open_data(4, port, flags=lrpeer.OPEN_UDP)
        self.assertEqual(res["code"], 0, res)
        st.sock.settimeout(3.0)
        return st

    def echo(self, st, payload):
        st.sock.sendall(lrpeer.enc_dgram(payload))
        buf = bytearray(st.parser.buf)
        st.parser.buf.clear()
        while True:
            got = lrpeer.dgram_split(buf)
            if got:
                return got[0]
            b = st.sock.recv(1 << 16)
            self.assertTrue(b, "agent closed a good UDP flow")
            buf += b

    def test_bad_frames_to_agent(self):
        port = free_port()
        self.lr.guest_server("udpecho", "127.0.0.1", port, stdin=True)
        host = lrpeer.FakeHost(self.lr.agent_socket)
        good = self.flow(host, port)
        self.assertEqual(self.echo(good, b"x" * 65507), b"x" * 65507)
        bad = self.flow(host, port)
        bad.sock.sendall(struct.pack(">H", 65535) + b"y" * 50)
        self.assertEqual(bad.sock.recv(100), b"", "agent kept a flow with an oversized frame")
        cut = self.flow(host, port)
        cut.sock.sendall(struct.pack(">H", 500) + b"z" * 20)
        cut.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(cut.sock.recv(100), b"")
        self.assertEqual(self.echo(good, b"still"), b"still")
        v, _ = poll(lambda: ("length over 65507" in self.lr.log() and
                             "truncated frame" in self.lr.log()) or None, 3.0, 0.05)
        self.assertTrue(v, "agent did not log the bad frames")
        for st in (good, bad, cut):
            st.close()

    def test_oversize_in_the_open_read(self):
        """An oversized frame that arrives in the same read as OPEN is logged
        too (issue 18, finding 10), not only one in a read of its own."""
        port = free_port()
        self.lr.guest_server("udpecho", "127.0.0.1", port, stdin=True)
        host = lrpeer.FakeHost(self.lr.agent_socket)
        mark = len(self.lr.log())
        st = host.stream(lrpeer.KIND_DATA, send_preamble=False)
        st.sock.sendall(lrpeer.preamble(lrpeer.KIND_DATA) +
                        lrpeer.frame(lrpeer.OPEN, lrpeer.enc_open(4, port) +
                                     bytes([lrpeer.OPEN_UDP])) +
                        struct.pack(">H", 65535) + b"y" * 50)
        st.sock.settimeout(3.0)
        try:
            while st.sock.recv(4096):
                pass
        except OSError:
            pass
        v, _ = poll(lambda: "length over 65507" in self.lr.log()[mark:] or None, 3.0, 0.05)
        self.assertTrue(v, "agent did not log an oversized frame sent with OPEN")
        st.close()


def oversize_with_result(st, msg):
    """OPEN_RESULT and an oversized frame in one write: one read on the host."""
    try:
        st.sock.sendall(lrpeer.frame(lrpeer.OPEN_RESULT, lrpeer.enc_open_result(lrpeer.ERR_OK, ""))
                        + struct.pack(">H", 65508) + b"x" * 100)
        time.sleep(3)
    except OSError:
        pass
    finally:
        st.close()


class UdpOversizeWithResult(HostileTestCase):
    AGENT = {"data": oversize_with_result}

    def test_logged(self):
        port = free_port()
        self.ctl.send(lrpeer.frame(lrpeer.LISTENER_ADD, lrpeer.enc_listener(
            "0.0.0.0", port, flags=lrpeer.LISTENER_UDP)))
        poll(lambda: (self.fg.ports().get("0.0.0.0:%d" % port) or {}).get("state") ==
             "forwarding" or None, 5.0, 0.02)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"hi", ("127.0.0.1", port))
        v, _ = poll(lambda: "length over 65507" in self.fg.log() or None, 3.0, 0.05)
        s.close()
        self.assertTrue(v, "lorelayd closed the flow without a line for the oversized frame "
                        "that came with OPEN_RESULT")
        self.assertTrue(self.fg.alive())


if __name__ == "__main__":
    unittest.main()
