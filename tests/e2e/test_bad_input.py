"""Scenario 11: bad input on the agent's transport socket. Garbage, a
preamble with a wrong version, an oversized frame and a truncated preamble
each get the stream closed promptly (never a hang), a log line naming what
was wrong, and the agent keeps serving: same pid, forwarding still works.

Only data-kind preambles are used for frames, so the test never opens a
second control stream that could legitimately displace the host's."""

import os
import re
import socket
import struct
import time
import unittest

from lrharness import LorelayTestCase, free_port

MAGIC = b"LRLY"
VERSION = 2  # LR_PROTO_VERSION
KIND_CONTROL, KIND_DATA = 1, 2


def reason(line):
    """The part of a log line after the level and the stream's own name:
    "... warn: stream from unix peer pid 1 uid 0: bad magic" -> "bad magic"."""
    text = re.sub(r"^.*?\b(warn|warning|error):\s*", "", line)
    return re.sub(r"^stream from [^:]*:\s*", "", text)


def preamble(version, kind):
    return MAGIC + bytes([version, kind, 0, 0])


class BadInput(LorelayTestCase):

    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.lr.guest_server("banner", "0.0.0.0", self.port, "tag=ok")
        self.lr.wait_port("0.0.0.0:%d" % self.port, "forwarding")
        self.assertTrue(os.path.exists(self.lr.agent_socket),
                        "agent socket %s missing" % self.lr.agent_socket)
        self.agent = self.lr.procs_named("lorelay-agent")
        self.assertEqual(len(self.agent), 1)

    def _send_bad(self, payload, keywords):
        log_before = len(self.lr.log())
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3.0)
        reply = b""
        try:
            s.connect(self.lr.agent_socket)
            s.sendall(payload)
            if len(payload) < 8:
                s.shutdown(socket.SHUT_WR)
            try:
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    reply += b
            except ConnectionResetError:
                pass
            except socket.timeout:
                self.fail("agent kept the stream open 3 s after %r" % payload[:16])
        finally:
            s.close()

        # If the agent answered, it must be a well-formed preamble + frames.
        if reply:
            self.assertEqual(reply[:4], MAGIC, "agent answered with non-protocol bytes %r" % reply[:16])

        def new_lines():
            return self.lr.log()[log_before:]
        deadline = time.monotonic() + 2
        pat = re.compile("|".join(keywords), re.I)
        while time.monotonic() < deadline and not pat.search(new_lines()):
            time.sleep(0.02)
        # Only the agent's warn/error lines count: the stream's own prefix
        # ("stream from unix peer ...") must not satisfy the keyword match.
        complaints = [l for l in new_lines().splitlines()
                      if "lorelay-agent" in l and re.search(r"\b(warn|warning|error):", l)]
        lines = [l for l in complaints if pat.search(reason(l))]
        self.assertTrue(lines, "no agent warn/error line mentioning %s after %r; new log:\n%s"
                        % (keywords, payload[:16], new_lines()))
        self.assertLessEqual(len(complaints), 2, "one bad stream, many complaints:\n" + "\n".join(complaints))
        self._still_serving()
        return reply, lines

    def _still_serving(self):
        self.assertEqual(self.lr.procs_named("lorelay-agent"), self.agent, "agent died or restarted")
        self.assertBanner("127.0.0.1", self.port, b"guest:ok\n")

    def test_garbage(self):
        self._send_bad(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ["magic", "preamble"])

    def test_wrong_version(self):
        reply, _ = self._send_bad(preamble(99, KIND_DATA), ["version"])
        if len(reply) >= 16:
            # preamble, then an ERROR frame with LR_ERR_VERSION (5)
            ftype, _, flen = struct.unpack(">HHI", reply[8:16])
            self.assertEqual(ftype, 3, "expected an ERROR frame, got type %d" % ftype)
            code = struct.unpack(">I", reply[16:20])[0]
            self.assertEqual(code, 5, "ERROR code %d, expected LR_ERR_VERSION" % code)

    def test_oversized_frame(self):
        hdr = struct.pack(">HHI", 30, 0, 0xFFFFFFF0)  # OPEN with a 4 GiB payload
        self._send_bad(preamble(VERSION, KIND_DATA) + hdr, ["too big", "large", "oversize", "length", "exceed"])

    def test_unknown_stream_kind(self):
        self._send_bad(preamble(VERSION, 77), ["kind", "preamble"])

    def test_truncated_preamble(self):
        # Peer gives up mid-preamble: nothing to report but it must not wedge the agent.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(3.0)
        s.connect(self.lr.agent_socket)
        s.sendall(b"LR")
        s.close()
        time.sleep(0.2)
        self._still_serving()

    def test_many_bad_streams(self):
        # Bounded: 200 garbage streams must neither leak nor stop the agent.
        for i in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(3.0)
            s.connect(self.lr.agent_socket)
            s.sendall(b"\xff" * 8)
            s.close()
        time.sleep(0.3)
        self._still_serving()
        fds = len(os.listdir("/proc/%d/fd" % self.agent[0]))
        self.assertLess(fds, 64, "agent holds %d fds after 200 closed bad streams" % fds)


if __name__ == "__main__":
    unittest.main()
