"""A wrong-key flood on a tcp: agent must not lock the real host out
(issue 18, finding 6).

In a namespace of its own: a real lorelay-agent on tcp:127.0.0.1:AP with a
key, a real lorelayd (--guest tcp:..., same key) and an echo server on
127.0.0.1:P. lorelayd runs in the same namespace, so its stand-in for P is
remapped to another port Q (forwardPorts = P only, so Q itself is never
forwarded). Then, for 4 s, 30 streams a second reach the agent with a
wrong key, and meanwhile 20 real clients connect to the stand-in: each of
their connections is a stream lorelayd opens to the agent with the right
key. All 20 must be echoed; the agent's failed-auth limit (10 a second)
may slow the flood, never the real host."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import lrharness
from lrharness import PYTHON, Proc, binary, free_port, poll, read_status
from lrhostile import measure

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)

ECHO = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(128)
print("ready", flush=True)
def serve(c):
    with c:
        while True:
            b = c.recv(65536)
            if not b: return
            c.sendall(b)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENTS = r"""
import os, socket, sys, threading, time
sys.path.insert(0, sys.argv[4])
import lrpeer
agent_port, standin, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
stop = time.monotonic() + seconds
flood = {"streams": 0}
def flooder():
    host = lrpeer.FakeHost(("127.0.0.1", agent_port), token=os.urandom(32))
    while time.monotonic() < stop:
        t = time.monotonic()
        try:
            st, res = host.open_data(4, 9, timeout=2.0)
            st.close()
        except Exception:
            pass
        flood["streams"] += 1
        time.sleep(max(0.0, 1 / 30 - (time.monotonic() - t)))
th = threading.Thread(target=flooder, daemon=True)
th.start()
time.sleep(0.5)
ok = 0
fails = []
for i in range(20):
    msg = b"real client %d\n" % i
    try:
        c = socket.create_connection(("127.0.0.1", standin), timeout=3.0)
        c.sendall(msg)
        c.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = c.recv(4096)
            if not b: break
            got += b
        c.close()
        if got == msg: ok += 1
        else: fails.append("client %d got %r" % (i, got))
    except OSError as e:
        fails.append("client %d: %s" % (i, e))
    time.sleep(0.15)
th.join()
print("RESULT ok=%d flood=%d" % (ok, flood["streams"]), flush=True)
for f in fails: print("FAIL " + f, flush=True)
"""


class AuthFlood(unittest.TestCase):

    def setUp(self):
        self.ns = "lrauth-%d" % os.getpid()
        self.tmp = tempfile.mkdtemp(prefix=self.ns + ".")
        self.procs = []
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)

    def tearDown(self):
        for p in reversed(self.procs):
            try:
                p.stop(timeout=3.0)
            except Exception:
                pass
        if any(e for e in (self._outcome.result.failures + self._outcome.result.errors)
               if e[0] is self):
            for p in self.procs:
                print("===== %s\n%s" % (p.argv, p.output()[-6000:]), file=sys.stderr)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def spawn(self, argv, name):
        p = Proc(["ip", "netns", "exec", self.ns] + argv, os.path.join(self.tmp, name + ".log"))
        self.procs.append(p)
        return p

    def test_flood_does_not_lock_out_the_host(self):
        key = os.path.join(self.tmp, "key")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32))
        os.close(fd)
        port, agent_port = free_port(), free_port()
        sock = os.path.join(self.tmp, "lorelayd.sock")
        conf = os.path.join(self.tmp, "lorelay.ini")
        with open(conf, "w") as f:
            f.write("[lorelay]\nremapOnConflict = true\nforwardPorts = %d\n" % port)
        echo = self.spawn([PYTHON, "-u", "-c", ECHO, str(port)], "echo")
        poll(lambda: "ready" in echo.output(), 5.0)
        self.spawn([binary("lorelay-agent"), "--listen", "tcp:127.0.0.1:%d" % agent_port,
                    "--token-file", key], "agent")
        time.sleep(0.3)
        self.spawn([binary("lorelayd"), "--guest", "tcp:127.0.0.1:%d" % agent_port,
                    "--token-file", key, "--socket", sock, "-c", conf, "--name", "g"],
                   "lorelayd")

        def remapped():
            try:
                st = read_status(sock)
            except (OSError, ValueError):
                return None
            for g in st.get("guests", []):
                for p in g.get("ports", []):
                    if p.get("guest") == "127.0.0.1:%d" % port and p.get("state") == "remapped":
                        return int(p["host"][0].rsplit(":", 1)[1])
            return None
        standin, _ = poll(remapped, 10.0, 0.05)
        self.assertIsNotNone(standin, "the echo server was not forwarded (remapped)")
        out = subprocess.run(["ip", "netns", "exec", self.ns, PYTHON, "-u", "-c", CLIENTS,
                              str(agent_port), str(standin), "4", TESTS],
                             capture_output=True, text=True, timeout=60)
        print(out.stdout, out.stderr, file=sys.stderr)
        res = [l for l in out.stdout.splitlines() if l.startswith("RESULT")]
        self.assertTrue(res, "no result from the clients")
        ok = int(res[0].split()[1].split("=")[1])
        flood = int(res[0].split()[2].split("=")[1])
        measure("wrong-key streams in 4 s", flood)
        measure("real connections through the stand-in that succeeded", "%d of 20" % ok)
        self.assertGreaterEqual(flood, 60, "the flood was too slow to test anything")
        self.assertEqual(ok, 20, "real connections failed during the flood")


if __name__ == "__main__":
    unittest.main()
