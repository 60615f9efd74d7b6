"""Hostile namespace agent: no descriptor from a guest (issue 18, finding 2
and 3). A real `lorelayd --netns NAME` runs against hostile_ns_agent.py in
place of lorelay-init + the agent. The agent passes, where lorelayd asks
for a server socket, a SOCK_RAW socket, a socket connected to another
guest port, a socket made in the host's namespace connected to a
host-only service, OPEN_RESULT one byte per sendmsg with 64 descriptors
each, and for a UDP flow a UDP socket connected to another server; on its
first control stream it sends a PING the same way as the flood. lorelayd
must relay none of them: every client gets its own guest server's banner
or echo (lorelayd connects inside the namespace itself), its
descriptor count stays flat, the control stream carrying descriptors is
dropped with one line, other ports keep working and status answers."""

import os
import socket
import threading
import time
import unittest

from lrharness import LorelayTestCase, PYTHON, fetch, free_port, free_ports, poll
from lrhostile import Checks, fd_count, measure

HERE = os.path.dirname(os.path.abspath(__file__))


class HostOnlyService:
    """A host service on 127.0.0.1:port that no guest may reach."""

    def __init__(self, port):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(16)
        self.served = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.served += 1
            try:
                c.sendall(b"host-only secret\n")
            except OSError:
                pass
            c.close()

    def close(self):
        self.ls.close()


class FdPassing(Checks, LorelayTestCase):
    START = False

    def _fetch(self, port):
        try:
            return fetch("127.0.0.1", port, timeout=3.0)
        except OSError as e:
            return repr(e).encode()

    def test_no_descriptor_from_a_guest(self):
        lr = self.lr
        raw, wrong, wrong_to, hostonly, flood, good, udp, udp_wrong = free_ports(8)
        hostonly_to = free_port(exclude=(raw, wrong, wrong_to, hostonly, flood, good, udp,
                                         udp_wrong))
        svc = HostOnlyService(hostonly_to)
        self.addCleanup(svc.close)
        agent_log = os.path.join(lr.tmpdir, "hostile-agent.log")
        init = os.path.join(lr.tmpdir, "hostile-init.sh")
        with open(init, "w") as f:
            f.write('#!/bin/sh\nexec %s -u %s "$@"\n'
                    % (PYTHON, os.path.join(HERE, "hostile_ns_agent.py")))
        os.chmod(init, 0o755)
        env = {"LORELAY_INIT": init, "HOSTILE_LOG": agent_log,
               "HOSTILE_PORTS": ",".join(str(p) for p in (raw, wrong, hostonly, flood, good)),
               "HOSTILE_RAW": str(raw), "HOSTILE_WRONG": str(wrong),
               "HOSTILE_WRONG_TO": str(wrong_to), "HOSTILE_HOSTONLY": str(hostonly),
               "HOSTILE_HOSTONLY_TO": str(hostonly_to), "HOSTILE_FLOOD": str(flood),
               "HOSTILE_UDP": str(udp), "HOSTILE_UDP_WRONG_TO": str(udp_wrong)}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            lr.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        for p in (raw, wrong, hostonly, flood, good):
            lr.guest_server("banner", "0.0.0.0", p, "tag=%d" % p)
        lr.guest_server("banner", "127.0.0.1", wrong_to, "tag=wrong")
        lr.guest_server("udpecho", "0.0.0.0", udp, "stdin=0")
        for p in (raw, wrong, hostonly, flood, good):
            lr.wait_port("0.0.0.0:%d" % p, "forwarding", timeout=10.0)
        lr.wait_port("0.0.0.0:%d" % udp, "forwarding", timeout=10.0,
                     pred=lambda e: e.get("proto") == "udp")
        pid = lr.daemon.pid
        # The hostile control stream has come and gone (the first one floods).
        poll(lambda: "control stream again" in open(agent_log).read()
             if os.path.exists(agent_log) else False, 10.0, 0.05)
        lr.wait_connected(10.0)
        # Warm up: the pool of sockets lorelayd makes in the namespace (at
        # most 16 per kind) fills after the first connection, not before.
        for _ in range(3):
            self._fetch(good)
        # The UDP flow first: its pool (UDP, IPv4) fills after it, and the
        # flow itself stays open (udpIdleTimeout) in the baseline.
        us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        us.settimeout(3.0)
        try:
            us.sendto(b"udp-ping", ("127.0.0.1", udp))
            reply = us.recv(65536)
        except OSError as e:
            reply = repr(e).encode()
        us.close()
        self.check(reply == b"udp-ping", "UDP port %d: client got %r, want its own guest "
                   "server's echo" % (udp, reply[:80]))
        time.sleep(0.5)
        before = fd_count(pid)
        # The peak matters too: a flood held only until its stream closes
        # still starves every other client meanwhile.
        peak = [before or 0]
        sampling = [True]

        def sample():
            while sampling[0]:
                n = fd_count(pid)
                if n is not None and n > peak[0]:
                    peak[0] = n
                time.sleep(0.002)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        got = {}
        for name, p in (("raw", raw), ("wrong", wrong), ("hostonly", hostonly),
                        ("flood", flood), ("good", good)):
            got[name] = self._fetch(p)
            self.check(got[name] == b"guest:%d\n" % p,
                       "%s port %d: client got %r, want its own guest server's banner"
                       % (name, p, got[name][:80]))
        self.check(svc.served == 0, "the host-only service was reached %d times through a guest"
                   % svc.served)
        # Every client was served above; the streams the flood dropped close
        # within moments: wait for the count to come back, up to 3 s.
        poll(lambda: (fd_count(pid) or 0) <= (before or 0) + 4, 3.0)
        after = fd_count(pid)
        sampling[0] = False
        sampler.join()
        measure("lorelayd_fds", "%s before, peak %s, %s after the hostile connections"
                % (before, peak[0], after))
        self.check(peak[0] <= (before or 0) + 8,
                   "lorelayd's descriptors peaked at %d (from %s)" % (peak[0], before))
        self.check(after is not None and before is not None and after <= before + 4,
                   "lorelayd's descriptors grew from %s to %s" % (before, after))
        log = lr.log()
        lines = [l for l in log.splitlines() if "file descriptors on the control stream: closed them" in l]
        measure("refused_fd_lines", len(lines))
        self.check(len(lines) == 1, "want one line about descriptors on the control stream, got "
                   "%d:\n%s" % (len(lines), "\n".join(lines[:5])))
        # Other ports keep working, status answers.
        for _ in range(20):
            if self._fetch(good) != b"guest:%d\n" % good:
                self.check(False, "port %d stopped working after the hostile agent" % good)
                break
        try:
            st = lr.status()
            self.check(st.get("guests"), "status has no guest")
        except Exception as e:
            self.check(False, "status failed: %r" % e)
        measure("hostile_agent", open(agent_log).read().strip().replace("\n", "; ")
                if os.path.exists(agent_log) else "no log")
        self.verify()


if __name__ == "__main__":
    unittest.main()
