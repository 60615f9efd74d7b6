"""lrpeer itself: its codec round-trips every message of docs/protocol.md,
and both fakes interoperate with the real programs, so a hostile test that
fails is about lorelay, not about the peer. A FakeAgent is accepted by a real
lorelayd (a listener it reports is forwarded, an echo comes back, a refusal
reaches the client as a reset); a FakeHost is accepted by a real agent
(WELCOME is not needed: a data stream's OPEN reaches a guest server)."""

import errno
import socket
import unittest

from lrharness import LorelayTestCase, free_port, fetch
from lrhostile import HostileTestCase, echo_through
import lrpeer as P  # tests/lrpeer.py, on the path through lrharness


class Codec(unittest.TestCase):

    def roundtrip(self, ftype, payload):
        parser = P.FrameParser()
        parser.feed(P.frame(ftype, payload))
        (f,) = parser.frames()
        self.assertEqual((f.type, f.payload), (ftype, payload))
        return f.msg()

    def test_every_message(self):
        m = self.roundtrip(P.HELLO, P.enc_hello(b"tok", "host", "1.2"))
        self.assertEqual((m["token"], m["guest_or_host_name"], m["version"]), (b"tok", b"host", b"1.2"))
        m = self.roundtrip(P.ERROR, P.enc_error(P.ERR_VERSION, "nope"))
        self.assertEqual((m["code"], m["text"]), (5, b"nope"))
        m = self.roundtrip(P.LISTENER_ADD, P.enc_listener("::", 8080, v6only=True))
        self.assertEqual((m["family"], m["port"], m["addr"], m["v6only"]), (6, 8080, "::", True))
        m = self.roundtrip(P.LISTENER_ADD, P.enc_listener("0.0.0.0", 80, owner=(42, "srv -p")))
        self.assertEqual((m["port"], m["pid"], m["command"]), (80, 42, b"srv -p"))
        m = self.roundtrip(P.LISTENER_DEL, P.enc_listener("127.0.0.1", 22))
        self.assertEqual((m["family"], m["addr"]), (4, "127.0.0.1"))
        m = self.roundtrip(P.PORT_STATE, P.enc_port_state(P.enc_listener("0.0.0.0", 80), 2, 40000))
        self.assertEqual((m["state_name"], m["host_port"]), ("remapped", 40000))
        m = self.roundtrip(P.REVERSE_SET, P.enc_reverse_set([5432, 6379]))
        self.assertEqual(m["ports"], [5432, 6379])
        m = self.roundtrip(P.REVERSE_OPEN, P.enc_reverse_open(7, 6, 5432))
        self.assertEqual((m["id"], m["family"], m["port"]), (7, 6, 5432))
        m = self.roundtrip(P.REVERSE_FAIL, P.enc_reverse_fail(7, 1, "x"))
        self.assertEqual((m["id"], m["code"]), (7, 1))
        m = self.roundtrip(P.PING, P.enc_ping(2 ** 63 + 1))
        self.assertEqual(m["nonce"], 2 ** 63 + 1)
        m = self.roundtrip(P.OPEN, P.enc_open(4, 80, b"t"))
        self.assertEqual((m["family"], m["port"], m["token"]), (4, 80, b"t"))
        m = self.roundtrip(P.OPEN_RESULT, P.enc_open_result(0))
        self.assertEqual((m["code"], m["token"]), (0, b""))
        m = self.roundtrip(P.OPEN_RESULT, P.enc_open_result(4, "no", b"mac"))
        self.assertEqual((m["code"], m["text"], m["token"]), (4, b"no", b"mac"))
        m = self.roundtrip(P.CHALLENGE, P.enc_challenge(bytes(range(32))))
        self.assertEqual(m["nonce"], bytes(range(32)))
        m = self.roundtrip(P.ATTACH, P.enc_attach(9))
        self.assertEqual(m["id"], 9)
        self.assertEqual(self.roundtrip(P.SYNC_DONE, b"")["name"], "SYNC_DONE")
        self.assertEqual(self.roundtrip(999, b"xyz")["name"], "unknown")

    def test_preamble_and_limits(self):
        self.assertEqual(P.preamble(P.KIND_DATA, version=2), b"LRLY\x02\x02\x00\x00")
        self.assertEqual(P.decode_preamble(P.preamble(P.KIND_REVERSE)), (P.PROTO_VERSION, 3))
        self.assertEqual(P.preamble(P.KIND_ANY, flags=P.PREAMBLE_KEYED), b"LRLY\x02\x00\x01\x00")
        with self.assertRaises(P.ProtoError):
            P.decode_preamble(b"GET / HT")
        parser = P.FrameParser()
        parser.feed(P.frame_header(P.OPEN, 5000))
        with self.assertRaises(P.ProtoError):
            parser.frames()
        with self.assertRaises(P.ProtoError):
            P.decode(P.LISTENER_ADD, b"\x04\x00")
        # strict: what lr_proto.c refuses (here a family 5), lenient: read as is
        bad = P.enc_listener("::", 80, family=5)
        self.assertEqual(P.decode(P.LISTENER_ADD, bad)["family"], 5)
        with self.assertRaises(P.ProtoError):
            P.decode(P.LISTENER_ADD, bad, strict=True)


class FakeAgentInterop(HostileTestCase):

    def test_listing_forwarded_and_echoed(self):
        port = free_port()
        P.FakeAgent.send_listing(self.ctl, [("0.0.0.0", port)])
        self.ctl.start_reader()
        ok = self.ctl.wait_for(lambda s: echo_through("127.0.0.1", port), timeout=5.0)
        self.assertTrue(ok, "no echo through the stand-in for a fake-agent listener")
        p = self.fg.ports().get("0.0.0.0:%d" % port)
        self.assertEqual(p and p["state"], "forwarding", p)
        self.assertEqual(self.fg.agent.opens[-1]["port"], port)

    def test_refusal_is_a_reset(self):
        self.fg.agent.data = "refuse"
        port = free_port()
        P.FakeAgent.send_listing(self.ctl, [("0.0.0.0", port)])
        self.ctl.start_reader()
        self.ctl.wait_for(lambda s: "0.0.0.0:%d" % port in self.fg.ports(), timeout=5.0)
        # The reset may come before fetch half-closes: shutdown then says ENOTCONN.
        with self.assertRaises(OSError) as cm:
            fetch("127.0.0.1", port, send=b"x", timeout=3.0)
        self.assertIn(cm.exception.errno, (errno.ECONNRESET, errno.ECONNREFUSED, errno.EPIPE,
                                           errno.ENOTCONN), cm.exception)


class FakeHostInterop(LorelayTestCase):

    def test_open_reaches_guest_server(self):
        port = free_port()
        self.lr.guest_server("banner", "127.0.0.1", port, "tag=fh")
        host = P.FakeHost(self.lr.agent_socket)
        st, res = host.open_data(4, port)
        try:
            self.assertEqual(res["name"], "OPEN_RESULT")
            self.assertEqual(res["code"], 0, res)
            self.assertEqual(st.recv_exact(9), b"guest:fh\n")
        finally:
            st.close()
        st, res = host.open_data(4, 1)  # nothing listens on port 1 in a fresh namespace
        st.close()
        self.assertEqual(res["code"], P.ERR_REFUSED, res)
        reply, how = host.send_bad(b"GET / HTTP/1.0\r\n\r\n")
        self.assertIn(how, ("eof", "reset"), "agent kept a garbage stream open")


if __name__ == "__main__":
    unittest.main()
