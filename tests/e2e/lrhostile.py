"""Shared pieces of the hostile-peer and fault-injection tests.

    procfs probes   rss/peak RSS, fd count, a pid's listening TCP sockets
                    (its /proc/PID/net/tcp{,6} rows whose inode it holds)
    FakeGuestDaemon a real `lorelayd --guest unix:PATH` against an lrpeer
                    FakeAgent, in the harness's temporary directory
    HostileTestCase one FakeGuestDaemon per test, diagnostics on failure
    Checks          soft assertions: every broken promise of a scenario is
                    reported together, not only the first one

Measured numbers are printed as "MEASURE name: value" lines on stderr so a
ctest log shows them whether the test passed or not.
"""

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import lrharness
from lrharness import Proc, binary, poll, read_status
from lrpeer import FakeAgent  # tests/lrpeer.py, on the path through lrharness

_counter = 0


def measure(name, value, unit=""):
    print("MEASURE %s: %s%s" % (name, value, (" " + unit) if unit else ""), file=sys.stderr,
          flush=True)


# ---------------------------------------------------------------- procfs

def proc_status_kb(pid, key):
    """A "VmRSS"/"VmHWM"-style field of /proc/PID/status, in KiB (None if gone)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_kb(pid):
    return proc_status_kb(pid, "VmRSS")


def hwm_kb(pid):
    """Peak RSS since the process started: catches a transient blow-up."""
    return proc_status_kb(pid, "VmHWM")


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return None


def socket_inodes(pid):
    out = set()
    d = "/proc/%d/fd" % pid
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for n in names:
        try:
            t = os.readlink(os.path.join(d, n))
        except OSError:
            continue
        if t.startswith("socket:["):
            out.add(int(t[8:-1]))
    return out


def _hex_addr(h, v6):
    import ipaddress
    b = bytes.fromhex(h)
    if not v6:
        return str(ipaddress.IPv4Address(b[::-1]))
    # four host-order 32-bit words
    words = [b[i:i + 4][::-1] for i in range(0, 16, 4)]
    return str(ipaddress.IPv6Address(b"".join(words)))


def listening_tcp(pid):
    """{(addr, port)} of the TCP LISTEN sockets pid holds, read from the
    pid's own network namespace (/proc/PID/net/tcp and tcp6)."""
    inodes = socket_inodes(pid)
    out = set()
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if len(p) < 10 or p[3] != "0A":
                        continue
                    if int(p[9]) not in inodes:
                        continue
                    h, port = p[1].split(":")
                    out.add((_hex_addr(h, v6), int(port, 16)))
        except (OSError, StopIteration):
            pass
    return out


def settle(fn, timeout, quiet=1.0, interval=0.1):
    """Polls fn() until its value has not changed for `quiet` seconds (or
    the deadline). Returns (value, seconds)."""
    t0 = time.monotonic()
    last = fn()
    since = t0
    while True:
        time.sleep(interval)
        v = fn()
        now = time.monotonic()
        if v != last:
            last, since = v, now
        elif now - since >= quiet:
            return v, now - t0
        if now - t0 > timeout:
            return v, now - t0


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    new = min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new


def port_free_range(lo, hi, n, exclude=()):
    """n distinct ports in [lo, hi] that are free on both host loopbacks."""
    import random
    cands = list(range(lo, hi + 1))
    random.shuffle(cands)
    out = []
    ex = set(exclude)
    for p in cands:
        if p in ex:
            continue
        if lrharness.port_is_free(p):
            out.append(p)
            if len(out) == n:
                return out
    raise RuntimeError("only %d free ports in %d-%d" % (len(out), lo, hi))


# ---------------------------------------------------------------- lorelayd + FakeAgent

class FakeGuestDaemon:
    """lorelayd --guest unix:AGENT_SOCK, the agent being an lrpeer FakeAgent."""

    def __init__(self, config=None, agent_kwargs=None, socket_rel="lorelayd.sock",
                 log_level="info", tag="lrh"):
        global _counter
        _counter += 1
        self.name = "%s-%d-%d" % (tag, os.getpid(), _counter)
        self.tmpdir = tempfile.mkdtemp(prefix=self.name + ".")
        self.agent_path = os.path.join(self.tmpdir, "agent.sock")
        self.sock = os.path.join(self.tmpdir, socket_rel)
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(self.tmpdir, "lorelay.ini")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.log_level = log_level
        self.agent = FakeAgent(self.agent_path, **(agent_kwargs or {})).start()
        self.daemon = None
        self.runs = 0
        self.log_paths = []
        self.procs = []
        self.streams = []

    def start(self, umask=None):
        self.runs += 1
        log = os.path.join(self.tmpdir, "lorelayd.%d.log" % self.runs)
        self.log_paths.append(log)
        argv = [binary("lorelayd"), "--guest", "unix:" + self.agent_path, "--socket", self.sock,
                "--name", self.name, "--log-level", self.log_level]
        if self.config_path:
            argv += ["-c", self.config_path]
        old = os.umask(umask) if umask is not None else None
        try:
            self.daemon = Proc(argv, log)
        finally:
            if old is not None:
                os.umask(old)
        return self.daemon

    @property
    def pid(self):
        return self.daemon.pid

    def alive(self):
        return self.daemon is not None and self.daemon.p.poll() is None

    def control(self, **kw):
        """Takes lorelayd's next control stream and handshakes it."""
        st = self.agent.accept_control(**kw)
        self.streams.append(st)
        return st

    def status(self, timeout=3.0):
        return read_status(self.sock, timeout)

    def status_or_none(self, timeout=2.0):
        try:
            return self.status(timeout)
        except (OSError, ValueError):
            return None

    def guest(self, st=None):
        st = st if st is not None else self.status()
        gs = st.get("guests", [])
        return gs[0] if gs else None

    def ports(self, st=None):
        g = self.guest(st)
        return {p.get("guest"): p for p in (g.get("ports", []) if g else [])}

    def ctl(self, *args, timeout=10.0):
        return subprocess.run([binary("lorelayctl"), "--socket", self.sock] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    def wait_connected(self, timeout=10.0):
        def ok():
            if not self.alive():
                raise AssertionError("lorelayd exited (%s); log:\n%s"
                                     % (self.daemon.p.returncode, self.log()))
            st = self.status_or_none()
            g = self.guest(st) if st else None
            return g if g and g.get("state") == "connected" else None
        g, el = poll(ok, timeout, 0.02)
        if not g:
            raise AssertionError("lorelayd not connected to the fake agent within %.1fs; log:\n%s"
                                 % (timeout, self.log()))
        return el

    def log_bytes(self):
        out = []
        for p in self.log_paths:
            try:
                with open(p, "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
        return b"".join(out)

    def log(self):
        return self.log_bytes().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.daemon is None:
            return None
        rc = self.daemon.stop(sig, timeout)
        return rc

    def dump(self, stream=sys.stderr, limit=20000):
        log = self.log()
        if len(log) > limit:
            log = log[:limit // 2] + "\n[... %d bytes cut ...]\n" % (len(log) - limit) + \
                log[-limit // 2:]
        print("\n===== lorelayd --guest fake agent diagnostics: %s =====\n%s"
              % (self.tmpdir, log), file=stream)
        print("fake agent stats: %s" % self.agent.stats, file=stream)
        stream.flush()

    def cleanup(self, keep_tmp=False):
        for st in self.streams:
            st.close()
        for p in self.procs:
            try:
                p.stop(timeout=3.0)
            except Exception:
                pass
        try:
            self.stop()
        except Exception:
            pass
        self.agent.close()
        if not keep_tmp:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


class Checks:
    """Soft assertions for a scenario with several promises: check() records
    a broken one and goes on; verify() fails once, listing all of them."""

    def check(self, cond, msg):
        if not hasattr(self, "_broken"):
            self._broken = []
        if not cond:
            self._broken.append(msg)
            print("BROKEN: " + msg, file=sys.stderr, flush=True)
        return bool(cond)

    def verify(self):
        broken = getattr(self, "_broken", [])
        self._broken = []
        if broken:
            self.fail("%d promise(s) broken:\n  - " % len(broken) + "\n  - ".join(broken))


def log_lines(text, pattern, flags=re.I):
    return [l for l in text.splitlines() if re.search(pattern, l, flags)]


class HostileTestCase(Checks, unittest.TestCase):
    """A fresh FakeGuestDaemon per test. CONFIG is the lorelay.ini text;
    AGENT the FakeAgent keyword arguments; START: start lorelayd and take
    the first control stream (empty listing) in setUp."""

    CONFIG = None
    AGENT = None
    START = True
    LOG_LEVEL = "info"

    def setUp(self):
        self.fg = FakeGuestDaemon(config=self.CONFIG, agent_kwargs=self.AGENT,
                                  log_level=self.LOG_LEVEL)
        self.addCleanup(self._teardown_fg)
        if self.START:
            self.fg.start()
            self.ctl = self.fg.control()
            self.fg.wait_connected()

    def _failed(self):
        return lrharness.LorelayTestCase._failed(self)

    def _teardown_fg(self):
        failed = self._failed()
        if failed or os.environ.get("LORELAY_E2E_VERBOSE"):
            self.fg.dump()
        self.fg.cleanup(keep_tmp=failed and bool(os.environ.get("LORELAY_E2E_KEEP")))


STRESS_SRV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stress_srv.py")


def stress_server(lr, mode, host, port, *opts, wait=True):
    """Starts stress_srv.py MODE in lr's namespace; waits for "ready"."""
    p = lr.spawn([lrharness.PYTHON, "-u", STRESS_SRV, mode, host, str(port)] + list(opts),
                 "stress-%s-%d" % (mode, port))
    if wait:
        p.wait_event("ready", timeout=10.0)
    return p


def agent_pid(lr):
    pids = lr.procs_named("lorelay-agent")
    return pids[0] if len(pids) == 1 else None


def echo_through(host, port, payload=b"ping through the stand-in\n", timeout=3.0):
    """Connects, sends, half-closes, reads to EOF: True if the echo came back."""
    try:
        return lrharness.fetch(host, port, send=payload, timeout=timeout) == payload
    except OSError:
        return False


def unix_connect(path, timeout=1.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s
