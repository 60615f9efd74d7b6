"""Fault 8: the agent is SIGKILLed in the middle of two transfers, one
uploading into a guest sink and one downloading from a guest source.

A --netns guest shares the host's kernel, so each connection is relayed in
one hop: the agent handed the connected server socket to lorelayd and is
no longer in the data path. Killing it must therefore not disturb the
transfers at all: both keep moving, neither hangs nor ends. On the
two-hop path (the relay-path variant with oneHop = false, the path VM
guests take) the agent relays every byte, so each host client sees its
connection end (a reset or EOF) within 5 s instead, never a hang. Either
way forwarding of new connections comes back by itself (lorelay-init restarts the agent,
lorelayd resyncs): a new connection works within 5 s of the kill."""

import os
import select
import signal
import socket
import threading
import time
import unittest

from lrharness import LorelayTestCase, fetch, free_ports, one_hop_expected, poll
from lrhostile import Checks, agent_pid, measure, stress_server

STALL = 10.0  # no progress and no error for this long: a hang
END_WITHIN = 5.0  # two hops: a transfer ends this soon after the kill


def _ended(e):
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, BrokenPipeError):
        return "pipe"
    return "error: %r" % e


class Transfer(threading.Thread):
    def __init__(self, port, upload):
        super().__init__(daemon=True)
        self.port, self.upload = port, upload
        self.bytes = 0
        self.how = None
        self.ended_at = None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)

    def run(self):
        buf = b"u" * 65536
        last = time.monotonic()
        try:
            while True:
                r, w, _ = select.select([self.sock], [self.sock] if self.upload else [], [], 1.0)
                if r:
                    try:
                        b = self.sock.recv(1 << 20)
                    except BlockingIOError:
                        b = None
                    if b == b"":
                        self.how = "eof"
                        break
                    if b:
                        self.bytes += len(b)
                        last = time.monotonic()
                if w:
                    try:
                        self.bytes += self.sock.send(buf)
                        last = time.monotonic()
                    except BlockingIOError:
                        pass
                if time.monotonic() - last > STALL:
                    self.how = "hang"
                    break
        except OSError as e:
            self.how = _ended(e)
        self.ended_at = time.monotonic()
        self.sock.close()


class AgentKillMidTransfer(Checks, LorelayTestCase):

    def test_kill_agent_while_streaming(self):
        lr = self.lr
        p_sink, p_src, p_banner = free_ports(3)
        stress_server(lr, "sink", "0.0.0.0", p_sink)
        stress_server(lr, "source", "0.0.0.0", p_src, "size=%d" % (64 << 30))
        lr.guest_server("banner", "0.0.0.0", p_banner, "tag=back")
        for p in (p_sink, p_src, p_banner):
            lr.wait_port("0.0.0.0:%d" % p, "forwarding")
        old = agent_pid(lr)
        self.assertIsNotNone(old, "expected one agent")

        up, down = Transfer(p_sink, True), Transfer(p_src, False)
        up.start()
        down.start()
        time.sleep(1.0)
        before = (up.bytes, down.bytes)
        self.assertTrue(up.how is None and down.how is None,
                        "a transfer ended before the kill: up %s, down %s" % (up.how, down.how))
        at_kill = (up.bytes, down.bytes)
        os.kill(old, signal.SIGKILL)
        t_kill = time.monotonic()
        if not one_hop_expected():
            self.check_transfers_end(up, down, before, t_kill)
        else:
            self.check_transfers_survive(up, down, before, at_kill)
        self.check_forwarding_back(p_banner, old, t_kill)

    def check_transfers_end(self, up, down, before, t_kill):
        up.join(END_WITHIN + 1)
        down.join(END_WITHIN + 1)
        for name, t, b in (("upload", up, before[0]), ("download", down, before[1])):
            took = (t.ended_at - t_kill) if t.ended_at else None
            measure("%s_end_after_kill" % name, "%s after %s s (%d MiB moved before the kill)"
                    % (t.how, "%.2f" % took if took is not None else "-", b >> 20))
            self.check(t.how in ("reset", "pipe", "eof"), "%s after the agent kill: %s (want a "
                       "reset or EOF)" % (name, t.how))
            self.check(took is not None and took < END_WITHIN, "%s took %s s to end after the "
                       "kill (max %.0f)" % (name, took, END_WITHIN))

    def check_transfers_survive(self, up, down, before, at_kill):
        time.sleep(2.0)
        for name, t, b, k in (("upload", up, before[0], at_kill[0]),
                              ("download", down, before[1], at_kill[1])):
            moved = t.bytes - k
            measure("%s_after_kill" % name, "%s, %d MiB moved in the 2 s after the kill "
                    "(%d MiB before)" % (t.how or "still running", moved >> 20, b >> 20))
            self.check(t.how is None, "%s ended after the agent kill: %s (one hop: the agent "
                       "is not in the data path)" % (name, t.how))
            self.check(moved > 0, "%s made no progress after the agent kill" % name)
        for t in (up, down):
            try:
                t.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        up.join(STALL + 3)
        down.join(STALL + 3)

    def check_forwarding_back(self, p_banner, old, t_kill):
        lr = self.lr

        def back():
            try:
                return fetch("127.0.0.1", p_banner, timeout=1.0) == b"guest:back\n"
            except OSError:
                return False
        ok, _ = poll(back, 5.0, 0.05)
        t_back = time.monotonic() - t_kill
        measure("forwarding_back_after_kill_s", "%.2f" % t_back)
        self.check(ok, "forwarding not back within 5 s of the agent kill")
        new = agent_pid(lr)
        self.check(new is not None and new != old, "agent not restarted (pids %s)"
                   % lr.procs_named("lorelay-agent"))
        self.check(lr.daemon.alive(), "lorelayd died")
        self.verify()


if __name__ == "__main__":
    unittest.main()
