#!/usr/bin/env python3
"""lorelay's own benchmark against the peers a user would otherwise pick.

One topology for everything: the client on the host, the server in a guest
network namespace that this script creates (through `lorelayd --netns`),
so every peer is measured side by side in one run on the same machine:

  direct        client and server both inside the namespace, on its loopback
                (the limit: what the guest itself gets)
  socat         the chain WSL-like relays amount to: socat on the host
                (TCP-LISTEN -> UNIX-CONNECT), socat in the namespace
                (UNIX-LISTEN -> TCP:127.0.0.1:P), fork per connection; with
                socat's default 8 KiB buffer, and with -b 262144
  lorelay       one hop, the path of a same-kernel guest: host 127.0.0.1:P ->
                lorelayd -> server (the agent connects and passes the socket)
  lorelay-2hop  two hops, the path VM guests use: a second lorelayd reaches an
                agent in the same namespace with `--guest unix:PATH`, where
                no descriptor is passed: lorelayd -> Unix socket -> agent -> server
  pasta         passt's pasta (podman's rootless networking), attached to the
                same namespace: it splices host loopback connections to a
                connection it opens inside the namespace itself
  rootlesskit   RootlessKit's builtin port driver (Docker rootless): the
                child in RootlessKit's own namespace connects and passes the
                socket to the parent, which copies in Go. RootlessKit makes its
                namespace itself, so its servers are a second copy of each
                server, started in that namespace with nsenter

Rows (lorelay's performance goals, GOALS below): iperf3 throughput host -> guest, guest -> host (-R),
both at once (--bidir) and 4 streams (-P 4); redis PING with 1 client and
SET with 50 clients; new connections per second with wrk + nginx
(`Connection: close`) and with bench/loadgen.py; RSS per idle relayed
connection on a fresh daemon, after the throughput runs and after the
connections churned; detection latency (scripts/measure-detection.py);
the idle CPU of the agents; UDP (udp): iperf3 -u received rate and loss
at a fixed offered load both ways, and DNS queries per second (dnsperf
against dnsmasq), direct against lorelay one-hop. The report is markdown tables with ratios to
direct, and with --chart a gnuplot chart of those ratios.

Traffic goes only to 127.0.0.1 on the host and to the namespace's own
loopback. Every run and every wait is bounded; the whole script has an
overall alarm. On any exit, processes it started are stopped by pid and the
namespace is deleted. Exit 1 if any row produced no number.
"""

import argparse
import importlib.util
import json
import os
import platform
import queue
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOADGEN = os.path.join(HERE, "loadgen.py")
MEASURE_DETECTION = os.path.join(HERE, "..", "scripts", "measure-detection.py")
PYTHON = sys.executable or "python3"


def log(msg):
    print("[bench %6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


T0 = time.monotonic()


# ------------------------------------------------------------------ helpers

# Port picking is the e2e harness's (random, below the ephemeral range,
# free on both loopbacks): one implementation for tests and benchmark.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from lrharness import GUESTSRV, Proc, _ephemeral_low, free_ports, port_is_free, read_status  # noqa: E402
import lrci  # noqa: E402  (tests/, put on the path by lrharness)

# The tools every row needs; scripts/deps.sh installs them (`bench` and `test`).
TOOLS = ("ip", "ss", "iperf3", "redis-server", "redis-benchmark", "socat", "wrk", "nginx",
         "pasta", "rootlesskit", "rootlessctl", "slirp4netns", "nsenter", "unshare")


def tool(name):
    """Path of a tool; nginx lives in /usr/sbin, which a user's PATH may lack."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def wait_for(fn, timeout, what, interval=0.02):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def tcp_listening(port, ns=None):
    """True if something listens on TCP port (any address) on the host, or
    in namespace ns. Asks ss, so that no probe connection disturbs a server
    (iperf3 logs an error for a connection that sends no cookie)."""
    cmd = ["ss", "-Hltn", "sport = :%d" % port]
    if ns:
        cmd = ["ip", "netns", "exec", ns] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    return r.returncode == 0 and r.stdout.strip() != ""


def proc_children():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def descendants(pid, kids=None):
    """pid's descendants; kids, a proc_children() map, when the caller
    walks several trees of one moment."""
    kids, out, todo = kids if kids is not None else proc_children(), [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def count_pipes(pids):
    """Pipe descriptors the processes hold (each a pipe page quota user)."""
    n = 0
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                n += os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("pipe:")
            except OSError:
                pass
    return n


def pss_kib(pids):
    """Proportional set size summed over pids, in KiB: processes that fork
    per connection (socat) or share pages (RootlessKit's parent and child)
    are counted once, not once per process as RSS would."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def kernel_kib():
    """Kernel memory that held connections grow: slab (socket structures,
    skbs' heads) plus the TCP stack's own page count (socket buffers; global,
    not per namespace). Noisy, so idle memory compares it over direct."""
    slab = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                slab = int(line.split()[1])
                break
    pages = 0
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fl = line.split()
                pages = int(fl[fl.index("mem") + 1])
    return slab + pages * os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_ns(pid):
    """CPU time of every thread of pid, in ns (schedstat: exact, not ticks)."""
    total = 0
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, t)) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def procs_cpu_ns(pids):
    """CPU of these processes and their live descendants (every thread,
    exactly), plus what their reaped children used (cutime + cstime, in
    clock ticks): socat forks a process per connection that exits before
    the run ends."""
    hz = os.sysconf("SC_CLK_TCK")
    total, seen, kids = 0, set(), proc_children()
    for pid in pids:
        for p in [pid] + descendants(pid, kids):
            if p in seen:
                continue
            seen.add(p)
            try:
                total += cpu_ns(p)
                with open("/proc/%d/stat" % p) as f:
                    st = f.read().rsplit(")", 1)[1].split()
                total += (int(st[13]) + int(st[14])) * 1000000000 // hz
            except (OSError, IndexError, ValueError):
                pass  # gone meanwhile: its time is in its parent's cutime
    return total


def cpu_ticks_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def median(xs):
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------ the bench

DET_BLOCK = 300  # ports in each variant's detection block


def load_measure_detection():
    """scripts/measure-detection.py as a module (its name has a dash)."""
    spec = importlib.util.spec_from_file_location("measure_detection", MEASURE_DETECTION)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Relay:
    """One lorelayd under test and its agent: where a lorelay variant's CPU,
    RSS and status come from. The Popen of lorelayd is in Bench.procs."""

    def __init__(self, variant, daemon, agent, sock):
        self.variant, self.daemon, self.agent, self.sock = variant, daemon, agent, sock


LORELAY_VARIANTS = ("lorelay", "lorelay-2hop")
# The peers a namespace user would otherwise pick.
PEER_VARIANTS = ("pasta", "rootlesskit")


class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = args.bin_dir
        self.ns = "lrbench-%d" % os.getpid()
        self.tmp = tempfile.mkdtemp(prefix="lrbench-")
        self.procs = []          # (name, Popen) we started, stopped in reverse order
        self.daemon = None       # the one-hop lorelayd (self.agent, self.sock: its agent, status)
        self.relays = {}
        self.socat_pids = {}  # socat variant -> [host pid, guest pid]
        self.unit_cpu = {}   # metric -> variant -> [relay CPU per unit of work]         # variant -> Relay, for "lorelay" and "lorelay-2hop"
        self.twin = {}           # guest port of a server -> the port of its two-hop twin
        self.det_ports = {}      # variant -> the block of ports its detection trials use
        self.results = {}        # metric -> variant -> [samples]
        self.extra = {}          # diagnostics
        self.idle_mem = {}       # state -> variant -> idle-connection figures
        self.rss_fresh = {}      # variant -> (lorelayd, agent) RSS before its first connection
        self.expected_variants = ({"direct", "socat", "socat-256k"} | set(LORELAY_VARIANTS)
                                  | set(PEER_VARIANTS))
        self.peer_ports = {}     # peer variant -> {server port -> host port (= its own server's port)}
        self.peer_proc = {}      # peer variant -> the Popen whose process tree is that peer
        self.rk = None           # RootlessKit: (child pid, api socket)
        self.ns_created = False

    # ---- process management

    def spawn(self, name, argv, ns=False, stdin=None, pipe_out=False):
        if ns:
            argv = ["ip", "netns", "exec", self.ns] + argv
        out = subprocess.PIPE if pipe_out else open(os.path.join(self.tmp, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop(self, p, timeout=5.0):
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            except ProcessLookupError:
                pass
        self.procs = [(n, q) for n, q in self.procs if q is not p]

    def logtext(self, name):
        try:
            with open(os.path.join(self.tmp, name + ".log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        for name, p in reversed(list(self.procs)):
            if p is not self.daemon:
                self.stop(p, timeout=2.0)
        if self.daemon is not None:
            self.stop(self.daemon)
        if self.ns_created:
            # Only processes this script started can be in its fresh namespace.
            r = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "delete", self.ns], capture_output=True)
        if not self.a.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log("logs kept in %s" % self.tmp)

    # ---- lorelayd

    def status(self, sock=None):
        return read_status(sock or self.sock)

    def port_entry(self, port, sock=None, proto="tcp"):
        """The status entry of a guest port (TCP unless told: a UDP socket on
        the same port number is another entry)."""
        try:
            st = self.status(sock)
        except (OSError, ValueError):
            return None
        for g in st.get("guests", []):
            for pe in g.get("ports", []):
                if pe.get("guest", "").endswith(":%d" % port) and pe.get("proto", "tcp") == proto:
                    return pe
        return None

    def write_config(self, name, extra=""):
        cfg = os.path.join(self.tmp, name)
        with open(cfg, "w") as f:
            f.write("[lorelay]\nlogLevel = warn\n" + extra)
        return cfg

    def wait_connected(self, name, daemon, sock):
        def connected():
            if daemon.poll() is not None:
                raise RuntimeError("%s exited (rc %s): %s"
                                   % (name, daemon.returncode, self.logtext(name)[-2000:]))
            try:
                st = self.status(sock)
            except (OSError, ValueError):
                return False
            return any(g.get("state") == "connected" for g in st.get("guests", []))
        wait_for(connected, 10, "%s to connect to its agent" % name)

    def start_daemon(self):
        """The one-hop lorelayd (`--netns`). The ports of the two-hop twins
        are ignored, so that the two-hop lorelayd can own them."""
        self.sock = os.path.join(self.tmp, "status.sock")
        cfg = self.write_config("lorelay.ini", "ignorePorts = %s\n" % self.two_hop_ports())
        self.daemon = self.spawn("lorelayd", [os.path.join(self.bin, "lorelayd"), "--netns", self.ns,
                                              "--name", self.ns, "--socket", self.sock, "-c", cfg])
        self.ns_created = True
        self.wait_connected("lorelayd", self.daemon, self.sock)
        agents = [p for p in descendants(self.daemon.pid) if comm(p) == "lorelay-agent"]
        if len(agents) != 1:
            raise RuntimeError("expected one lorelay-agent under lorelayd, found %r" % agents)
        self.agent = agents[0]
        self.relays["lorelay"] = Relay("lorelay", self.daemon, self.agent, self.sock)
        log("lorelayd pid %d, agent pid %d, namespace %s" % (self.daemon.pid, self.agent, self.ns))

    def start_two_hop(self):
        """The two-hop path VM guests use, on the same namespace: an agent
        serving `unix:PATH` in the namespace, and a second lorelayd that
        reaches it with `--guest unix:PATH`. For --guest lorelayd accepts no
        passed descriptor, so every byte goes lorelayd -> Unix socket ->
        agent -> server. It may claim only the twin ports (forwardPorts);
        the one-hop lorelayd ignores those, so the two never compete."""
        path = os.path.join(self.tmp, "agent-2hop.sock")
        sock = os.path.join(self.tmp, "status-2hop.sock")
        acfg = self.write_config("agent-2hop.ini")
        cfg = self.write_config("lorelay-2hop.ini", "forwardPorts = %s\n" % self.two_hop_ports())
        # `ip netns exec` execs the agent, so the Popen's pid is the agent's.
        agent = self.spawn("agent-2hop", [os.path.join(self.bin, "lorelay-agent"), "--listen",
                                          "unix:" + path, "--name", self.ns + "-2hop", "-c", acfg], ns=True)
        wait_for(lambda: os.path.exists(path) or agent.poll() is not None, 10, "the two-hop agent's socket")
        if agent.poll() is not None or comm(agent.pid) != "lorelay-agent":
            raise RuntimeError("two-hop agent did not start: %s" % self.logtext("agent-2hop")[-1500:])
        daemon = self.spawn("lorelayd-2hop", [os.path.join(self.bin, "lorelayd"), "--guest", "unix:" + path,
                                              "--name", self.ns + "-2hop", "--socket", sock, "-c", cfg])
        self.wait_connected("lorelayd-2hop", daemon, sock)
        self.relays["lorelay-2hop"] = Relay("lorelay-2hop", daemon, agent.pid, sock)
        log("two-hop: lorelayd pid %d, agent pid %d on unix:%s" % (daemon.pid, agent.pid, path))

    # ---- the peers: pasta and RootlessKit

    def start_pasta(self, ports):
        """One pasta on the guest namespace, forwarding a host port of its
        own to each server port (-t 127.0.0.1/HOST:GUEST), as podman does.
        As root it must be told --runas 0:0, or it cannot enter a namespace
        made by `ip netns add`. -u/-T/-U none: TCP from the host only."""
        hp = free_ports(len(ports))
        self.peer_ports["pasta"] = dict(zip(ports, hp))
        argv = ["pasta", "-f", "-q", "--runas", "0:0"]
        for g, h in zip(ports, hp):
            argv += ["-t", "127.0.0.1/%d:%d" % (h, g)]
        argv += ["-u", "none", "-T", "none", "-U", "none", "--netns", "/run/netns/" + self.ns]
        p = self.spawn("pasta", argv)
        self.peer_proc["pasta"] = p
        for h in hp:
            def up(h=h):
                if p.poll() is not None:
                    self._died("pasta", p)
                return tcp_listening(h)
            wait_for(up, 10, "pasta to listen on %d" % h)
        log("pasta pid %d forwarding %s" % (p.pid, self.peer_ports["pasta"]))

    def _died(self, name, p):
        raise RuntimeError("%s exited (rc %s): %s" % (name, p.returncode, self.logtext(name)[-1500:]))

    def start_rootlesskit(self, ports):
        """RootlessKit 1.1 with slirp4netns and its builtin port driver.
        As root it still wants a subordinate id range for root: a private
        mount namespace binds files of ours over /etc/subuid and /etc/subgid,
        so the machine's files are never changed. Its servers listen on the
        same port number as the host port it forwards (a port of their own,
        so two copies of a server never share a pid or data path)."""
        d = os.path.join(self.tmp, "rootlesskit")
        os.makedirs(d)
        for f in ("subuid", "subgid"):
            with open(os.path.join(d, f), "w") as fh:
                fh.write("root:100000:65536\n")
        script = os.path.join(d, "start.sh")
        with open(script, "w") as fh:
            fh.write("set -e\n"
                     "for f in subuid subgid; do [ -e /etc/$f ] || : > /etc/$f; "
                     "mount --bind %s/$f /etc/$f; done\n"
                     "exec rootlesskit --state-dir=%s/state --net=slirp4netns --port-driver=builtin "
                     "--disable-host-loopback sleep %d\n" % (d, d, self.a.max_seconds + 60))
        p = self.spawn("rootlesskit", ["unshare", "-m", "--propagation", "private", "sh", script])
        self.peer_proc["rootlesskit"] = p
        pidf, api = os.path.join(d, "state", "child_pid"), os.path.join(d, "state", "api.sock")

        def ready():
            if p.poll() is not None:
                self._died("rootlesskit", p)
            return os.path.exists(pidf) and os.path.exists(api) and open(pidf).read().strip()
        child = int(wait_for(ready, 15, "RootlessKit's child"))
        self.rk = (child, api)
        self.peer_ports["rootlesskit"] = dict(zip(ports, free_ports(len(ports))))
        log("rootlesskit pid %d, child %d, ports %s" % (p.pid, child, self.peer_ports["rootlesskit"]))

    def start_rk_server(self, name, argv, port):
        """A copy of a server in RootlessKit's namespace on its own port,
        published on the host's 127.0.0.1 at the same number."""
        child, api = self.rk
        p = self.spawn(name + "-rk", ["nsenter", "-t", str(child), "-n", "--"] + argv)
        ss = ["nsenter", "-t", str(child), "-n", "ss", "-Hltn", "sport = :%d" % port]

        def listening():
            if p.poll() is not None:
                self._died(name + "-rk", p)
            r = subprocess.run(ss, capture_output=True, text=True, timeout=10)
            return r.returncode == 0 and r.stdout.strip() != ""
        wait_for(listening, 10, "%s to listen in RootlessKit's namespace" % name)
        r = subprocess.run(["rootlessctl", "--socket", api, "add-ports", "127.0.0.1:%d:%d/tcp" % (port, port)],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError("rootlessctl add-ports %d: %s" % (port, (r.stderr or r.stdout).strip()))
        wait_for(lambda: tcp_listening(port), 10, "RootlessKit to listen on %d" % port)
        return p

    def peer_pids(self, variant):
        p = self.peer_proc.get(variant)
        return [p.pid] + descendants(p.pid) if p else []

    def plan_ports(self):
        """Five server ports (direct, socat, one-hop), their two-hop twins,
        and a block of ports for each variant's detection trials."""
        ports = free_ports(10)
        self.twin = dict(zip(ports[:5], ports[5:]))
        hi = min(_ephemeral_low() - 1, 32000)  # the range free_port() picks from
        blocks = []
        while len(blocks) < 2:
            lo = random.randint(12000, hi - DET_BLOCK)
            b = range(lo, lo + DET_BLOCK)
            if not any(p in b for p in ports) and not any(lo < o.stop and o.start < b.stop for o in blocks):
                blocks.append(b)
        self.det_ports = dict(zip(LORELAY_VARIANTS, blocks))
        return ports[:5]

    def two_hop_ports(self):
        """What only the two-hop lorelayd forwards: its servers' twin ports
        and its detection block (a forwardPorts / ignorePorts value)."""
        b = self.det_ports["lorelay-2hop"]
        return ", ".join([str(p) for p in sorted(self.twin.values())] + ["%d-%d" % (b.start, b.stop - 1)])

    def wait_forwarding(self, port, sock=None):
        wait_for(lambda: (self.port_entry(port, sock) or {}).get("state") == "forwarding", 10,
                 "lorelay to forward port %d" % port)

    # ---- guest servers and socat chains

    def start_guest_server(self, name, argv, port, relay="lorelay"):
        p = self.spawn(name, argv, ns=True)

        def listening():
            if p.poll() is not None:
                raise RuntimeError("%s exited: %s" % (name, self.logtext(name)[-1500:]))
            return tcp_listening(port, self.ns)
        wait_for(listening, 10, "%s to listen" % name)
        self.wait_forwarding(port, self.relays[relay].sock)
        return p

    def start_guest_pair(self, name, argv_for, port):
        """The same server twice in the namespace: on `port` for direct,
        socat and one-hop, and on its twin port for two-hop (two lorelayd
        cannot own one host port). argv_for(port) gives the command line."""
        procs = [self.start_guest_server(name, argv_for(port), port)]
        if "lorelay-2hop" in self.relays:
            tw = self.twin[port]
            procs.append(self.start_guest_server(name + "-2hop", argv_for(tw), tw, relay="lorelay-2hop"))
        if self.rk:
            rp = self.peer_ports["rootlesskit"][port]
            procs.append(self.start_rk_server(name, argv_for(rp), rp))
        return procs

    def start_socat(self, target_port, host_port, bufsize):
        """Host 127.0.0.1:host_port -> Unix socket -> namespace 127.0.0.1:target_port."""
        tag = "socat-%d-%s" % (target_port, bufsize or "8k")
        path = os.path.join(self.tmp, tag + ".sock")
        b = ["-b", str(bufsize)] if bufsize else []
        inner = self.spawn(tag + "-guest", ["socat"] + b + ["UNIX-LISTEN:%s,fork" % path,
                                                           "TCP:127.0.0.1:%d" % target_port], ns=True)
        wait_for(lambda: os.path.exists(path), 5, "socat unix listener %s" % path)
        outer = self.spawn(tag + "-host", ["socat"] + b + [
            "TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr" % host_port, "UNIX-CONNECT:%s" % path])
        wait_for(lambda: tcp_listening(host_port), 5, "socat host listener %d" % host_port)
        return [outer, inner]

    def stop_all(self, ps):
        for p in ps:
            self.stop(p)

    # ---- variants

    def variants(self, with_256k, two_hop=False):
        v = ["direct", "lorelay", "socat"]
        if with_256k:
            v.append("socat-256k")
        if two_hop and "lorelay-2hop" in self.relays:
            v.append("lorelay-2hop")
        v += [p for p in PEER_VARIANTS if p in self.peer_ports]
        return v

    def all_variants(self):
        """Every variant of the rows with a direct figure, in the order runs
        interleave within a round."""
        return self.variants(True, two_hop=True)

    def target(self, variant, port, socat_ports):
        """(in_namespace, port) a client uses for this variant."""
        if variant == "direct":
            return True, port
        if variant == "lorelay":
            return False, port
        if variant == "lorelay-2hop":
            return False, self.twin[port]
        if variant in self.peer_ports:
            return False, self.peer_ports[variant][port]
        return False, socat_ports[variant]

    def record(self, metric, variant, value):
        self.results.setdefault(metric, {}).setdefault(variant, []).append(value)

    def cpu_snapshot(self, variant="lorelay"):
        r = self.relays.get(variant)
        if r is None:
            return None
        return cpu_ns(r.daemon.pid), cpu_ns(r.agent)

    def relay_pids(self, variant):
        """The processes that relay for a variant (none for direct)."""
        if variant in self.relays:
            r = self.relays[variant]
            return [r.daemon.pid, r.agent]
        if variant in self.peer_proc:
            return [self.peer_proc[variant].pid]
        return list(self.socat_pids.get(variant, []))

    def unit_start(self, variant):
        pids = self.relay_pids(variant)
        return (pids, procs_cpu_ns(pids)) if pids else None

    def unit_done(self, metric, variant, start, units):
        """The relay's CPU per unit of work in one run (µs per request or
        connection, ms per GB): what the relay itself costs, apart from
        how the 2 cores were shared among it and the client and server."""
        if start is None or not units or metric not in UNIT_COST:
            return
        pids, before = start
        ns = procs_cpu_ns(pids) - before
        scale = UNIT_COST[metric][2]
        self.unit_cpu.setdefault(metric, {}).setdefault(variant, []).append(ns / scale / units)

    def note_relay_cpu(self, metric, before, secs, variant="lorelay"):
        if before is None:
            return
        after = self.cpu_snapshot(variant)
        d = [(after[i] - before[i]) / 1e9 / secs * 100 for i in range(2)]
        self.extra.setdefault("%s %s CPU %% of a core (lorelayd, agent)" % (metric, variant), []).append(
            [round(d[0], 1), round(d[1], 1)])

    def pause(self, secs):
        time.sleep(secs * self.a.pause)

    def with_socat(self, target_port, names):
        ports = free_ports(len(names))
        chains, socat_ports = [], {}
        for name, hp in zip(names, ports):
            pair = self.start_socat(target_port, hp, 262144 if name == "socat-256k" else None)
            chains += pair
            socat_ports[name] = hp
            self.socat_pids[name] = [c.pid for c in pair]
        return chains, socat_ports

    # ---- --profile: where the relays' CPU goes, by perf

    # The kernel functions that are each system call's body, with the name a
    # reader knows it by. Their "children" share is the time spent in that
    # call, the TCP work it does on the peer's behalf on loopback included.
    SYSCALL_SYMBOLS = (("ksys_write", "write"), ("ksys_read", "read"),
                       ("do_epoll_wait", "epoll_wait"), ("do_epoll_ctl", "epoll_ctl"),
                       ("__sys_connect", "connect"), ("__sys_accept4", "accept4"),
                       ("__sys_shutdown", "shutdown"), ("__x64_sys_close", "close"),
                       ("__sys_socket", "socket"), ("__sys_sendmsg", "sendmsg"),
                       ("__sys_recvmsg", "recvmsg"), ("__x64_sys_splice", "splice"),
                       ("__x64_sys_getsockopt", "getsockopt"), ("__x64_sys_setsockopt", "setsockopt"))

    def profile(self, metric, run_once):
        """One more run of a row through lorelay one-hop, under `perf record`
        on lorelayd and its agent, not counted in the results (perf slows
        what it watches): per process, the share of its CPU in the kernel and
        in each system call."""
        r = self.relays.get("lorelay")
        if not self.a.profile or r is None:
            return
        data = os.path.join(self.tmp, "perf-%s.data" % metric)
        perf = subprocess.Popen([tool("perf"), "record", "-q", "-g", "-o", data, "-p",
                                 "%d,%d" % (r.daemon.pid, r.agent)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        before, t = self.cpu_snapshot("lorelay"), time.monotonic()
        try:
            run_once()
        finally:
            perf.send_signal(signal.SIGINT)
            try:
                _, err = perf.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                perf.kill()
                _, err = perf.communicate()
        dt = time.monotonic() - t
        after = self.cpu_snapshot("lorelay")
        if perf.returncode not in (0, -signal.SIGINT) or not os.path.exists(data):
            self.extra.setdefault("profile errors", []).append("%s: perf: %s" % (metric, err.strip()[-200:]))
            return
        out = {}
        for i, comm in enumerate(("lorelayd", "lorelay-agent")):
            out[comm] = self.perf_split(data, comm)
            out[comm]["cpu_pct"] = round((after[i] - before[i]) / 1e9 / dt * 100, 1)
        self.profiles = getattr(self, "profiles", {})
        self.profiles[metric] = out
        for comm, o in out.items():
            log("profile %s %s: %s %% of a core, kernel %s %%, %s"
                % (metric, comm, o["cpu_pct"], o.get("kernel_pct"),
                   ", ".join("%s %s %%" % kv for kv in o.get("syscalls", []))))

    def perf_split(self, data, comm):
        """{kernel_pct, syscalls: [(name, pct)...]} for one process of a perf
        file, as shares of that process's own samples. Each sample's kernel
        call chain is walked from the leaf up to the first system call body
        it passes through (perf report's own "children" totals lose frames
        when libuv's user stack cannot be unwound)."""
        names = dict(self.SYSCALL_SYMBOLS)
        try:
            out = subprocess.run([tool("perf"), "script", "-i", data, "--comms", comm,
                                  "-F", "comm,ip,sym,dso"],
                                 capture_output=True, text=True, timeout=300).stdout
        except subprocess.TimeoutExpired:
            return {}
        total = kernel = 0
        counts = {}
        for block in out.split("\n\n"):
            frames = [ln.strip() for ln in block.strip().splitlines()[1:]]
            if not frames:
                continue
            total += 1
            if frames[0].endswith("([kernel.kallsyms])"):
                kernel += 1
            for fr in frames:  # "ADDRESS SYMBOL (DSO)"
                f = fr.split()
                sym = f[1] if len(f) > 1 else ""
                if sym in names:
                    counts[names[sym]] = counts.get(names[sym], 0) + 1
                    break
        if not total:
            return {}
        pct = lambda n: round(n / total * 100, 1)  # noqa: E731
        return {"kernel_pct": pct(kernel), "samples": total,
                "syscalls": sorted(((k, pct(v)) for k, v in counts.items()), key=lambda kv: -kv[1])[:10]}

    # ---- metric 1: iperf3, four ways

    # metric -> extra iperf3 flags. host -> guest is the client sending (the
    # default), guest -> host has the server send (-R); --bidir is the
    # two-way load under which WSL's relay deadlocks (both directions summed).
    IPERF_MODES = (("throughput", []), ("throughput_rev", ["-R"]),
                   ("throughput_bidir", ["--bidir"]), ("throughput_p4", ["-P", "4"]))

    def lost_round(self, key, what, metric, r, v, e):
        """A round a peer failed: recorded under extra[key] and logged."""
        self.extra.setdefault(key, []).append("%s round %d %s: %s" % (metric, r + 1, v, str(e)[-120:]))
        log("%s round %d %-12s failed: %s" % (what, r + 1, v, str(e)[-120:]))

    def iperf_once(self, in_ns, port, flags, variant=None):
        """Gbit/s received, summed over both directions for --bidir."""
        size = ["-t", str(self.a.iperf_secs)]
        # -n with --bidir can hang at the end of the test (iperf 3.12, about
        # 1 run in 6 through a socat chain), and so can -n through pasta
        # (-R, -P 4): those always run for a time.
        if self.a.iperf_bytes and "--bidir" not in flags and variant not in PEER_VARIANTS:
            size = ["-n", str(self.a.iperf_bytes)]
        cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-J", "--connect-timeout", "3000"] + size + flags
        if in_ns:
            cmd = ["ip", "netns", "exec", self.ns] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.a.iperf_secs + 60)
        try:
            j = json.loads(out.stdout)
        except ValueError:
            raise RuntimeError("iperf3 %s printed no JSON: %s" % (" ".join(flags), out.stderr[-500:]))
        if "error" in j:
            raise RuntimeError("iperf3 %s: %s" % (" ".join(flags), j["error"]))
        end = j["end"]
        bps = end["sum_received"]["bits_per_second"]
        nbytes = end["sum_received"]["bytes"]
        if "sum_received_bidir_reverse" in end:
            bps += end["sum_received_bidir_reverse"]["bits_per_second"]
            nbytes += end["sum_received_bidir_reverse"]["bytes"]
        return bps / 1e9, nbytes

    def bench_iperf(self, port):
        names = ["socat", "socat-256k"]
        chains, sp = self.with_socat(port, names)
        try:
            for r in range(self.a.rounds):
                for metric, flags in self.IPERF_MODES:
                    for v in self.all_variants():
                        in_ns, p = self.target(v, port, sp)
                        before, unit = self.cpu_snapshot(v), self.unit_start(v)
                        t = time.monotonic()
                        try:
                            gbps, nbytes = self.iperf_once(in_ns, p, flags, v)
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            if v not in PEER_VARIANTS:
                                raise
                            # A peer that hangs or fails loses that round, not the run.
                            self.lost_round("peer errors", "iperf3 %-16s" % metric, metric, r, v, e)
                            continue
                        self.record(metric, v, gbps)
                        if gbps == 0:
                            # A relay that blocks on a write while its peer
                            # blocks on one too: the two-way stall --bidir is for.
                            self.extra.setdefault("stalled: no byte received", []).append(
                                "%s %s round %d" % (metric, v, r + 1))
                        self.note_relay_cpu(metric, before, time.monotonic() - t, v)
                        self.unit_done(metric, v, unit, nbytes / 1e9)
                        log("iperf3 %-16s round %d %-12s %.2f Gbit/s" % (metric, r + 1, v, gbps))
                        self.pause(0.5)
        finally:
            self.stop_all(chains)

    # ---- metrics 2 and 3: redis

    def redis_bench(self, in_ns, port, test, clients, n):
        cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-c", str(clients),
               "-n", str(n), "--csv"]
        if in_ns:
            cmd = ["ip", "netns", "exec", self.ns] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.a.redis_timeout)
        rows = {}
        for line in out.stdout.splitlines():
            f = [x.strip('"') for x in line.split(",")]
            if len(f) >= 2 and f[0] != "test":
                rows[f[0]] = float(f[1])
        if not rows:
            raise RuntimeError("redis-benchmark printed no result: %s %s" % (out.stdout, out.stderr))
        return rows

    def bench_redis(self, port):
        chains, sp = self.with_socat(port, ["socat", "socat-256k"])
        try:
            for metric, test, c, n, row in (("ping_1", "ping", 1, self.a.ping_n, "PING_MBULK"),
                                            ("set_50", "set", 50, self.a.set_n, "SET")):
                for r in range(self.a.rounds):
                    for v in self.all_variants():
                        in_ns, p = self.target(v, port, sp)
                        before, unit = self.cpu_snapshot(v), self.unit_start(v)
                        t = time.monotonic()
                        try:
                            rows = self.redis_bench(in_ns, p, test, c, n)
                        except (RuntimeError, subprocess.TimeoutExpired) as e:
                            if v == "lorelay":
                                raise
                            # A peer that drops or stalls a client (socat's
                            # fork chain under 50 clients) loses that round,
                            # not the run.
                            self.lost_round("redis errors", "redis %s" % metric, metric, r, v, e)
                            continue
                        dt = time.monotonic() - t
                        self.record(metric, v, rows[row] / 1000)
                        self.note_relay_cpu(metric, before, dt, v)
                        self.unit_done(metric, v, unit, n * len(rows))  # "-t ping" runs two tests
                        log("redis %s round %d %-12s %s" % (metric, r + 1, v,
                                                            ", ".join("%s %.1f k/s" % (k, x / 1000)
                                                                      for k, x in rows.items())))
                        self.pause(0.3)
                in_ns, p = self.target("lorelay", port, sp)
                self.profile(metric, lambda: self.redis_bench(in_ns, p, test, c, n))
        finally:
            self.stop_all(chains)

    # ---- metric 4: new connections per second, with the load generator

    def bench_connrate(self, port):
        chains, sp = self.with_socat(port, ["socat", "socat-256k"])
        try:
            for r in range(self.a.rounds):
                for v in self.all_variants():
                    in_ns, p = self.target(v, port, sp)
                    argv = [PYTHON, LOADGEN, "connrate", "127.0.0.1", str(p), str(self.a.conn_secs)]
                    if in_ns:
                        argv = ["ip", "netns", "exec", self.ns] + argv
                    before, unit = self.cpu_snapshot(v), self.unit_start(v)
                    t = time.monotonic()
                    cl = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
                          for _ in range(self.a.conn_clients)]
                    ok = err = 0
                    for c in cl:
                        o, _ = c.communicate(timeout=self.a.conn_secs + 30)
                        f = o.split()
                        ok += int(f[1])
                        err += int(f[3])
                    dt = time.monotonic() - t
                    rate = ok / self.a.conn_secs / 1000
                    self.record("connrate", v, rate)
                    self.note_relay_cpu("connrate", before, dt, v)
                    self.unit_done("connrate", v, unit, ok)
                    if err:
                        self.extra.setdefault("connrate errors", []).append("%s: %d" % (v, err))
                    log("connrate round %d %-12s %.2f k/s (%d errors)" % (r + 1, v, rate, err))
                    self.pause(1.0)
        finally:
            self.stop_all(chains)

    # ---- metric 4b: new connections per second, wrk + nginx

    def nginx_argv(self, port):
        """nginx serving one tiny file on 0.0.0.0:port, from a config in the
        tmp dir: no system service, nothing written outside the tmp dir."""
        d = os.path.join(self.tmp, "nginx-%d" % port)
        www = os.path.join(self.tmp, "www")
        os.makedirs(d, exist_ok=True)
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "tiny.txt"), "w") as f:
            f.write("lorelay bench\n")
        conf = os.path.join(d, "nginx.conf")
        temps = "".join("    %s_temp_path %s/%s;\n" % (k, d, k)
                        for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(conf, "w") as f:
            f.write("daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\n"
                    "pid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
                    "events { worker_connections 4096; }\n"
                    "http {\n    access_log off;\n%s"
                    "    server {\n        listen 0.0.0.0:%d backlog=4096;\n        root %s;\n    }\n}\n"
                    % (d, d, temps, port, www))
        return [tool("nginx"), "-c", conf, "-p", d + "/", "-e", os.path.join(d, "error.log")]

    def wrk_once(self, in_ns, port):
        """Requests (= connections: `Connection: close`) per second, in k/s."""
        cmd = [tool("wrk"), "-t", str(self.a.wrk_threads), "-c", str(self.a.wrk_conns),
               "-d", "%ds" % self.a.wrk_secs, "--timeout", "5s", "-H", "Connection: close",
               "http://127.0.0.1:%d/tiny.txt" % port]
        if in_ns:
            cmd = ["ip", "netns", "exec", self.ns] + cmd
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=self.a.wrk_secs + 30)
        rate = errors = None
        count = 0
        for line in out.stdout.splitlines():
            f = line.split()
            if line.startswith("Requests/sec:"):
                rate = float(f[1])
            elif len(f) > 2 and f[1:3] == ["requests", "in"]:
                count = int(f[0])
            elif line.strip().startswith("Non-2xx"):
                # nginx serves one static file: anything but 200 is a broken set-up.
                raise RuntimeError("wrk: nginx answered with errors: %s" % line.strip())
            elif line.strip().startswith("Socket errors:"):
                errors = line.strip()
        if rate is None:
            raise RuntimeError("wrk printed no rate: %s %s" % (out.stdout[-500:], out.stderr[-500:]))
        return rate / 1000, errors, count

    def bench_wrk(self, port):
        chains, sp = self.with_socat(port, ["socat", "socat-256k"])
        try:
            for r in range(self.a.rounds):
                for v in self.all_variants():
                    in_ns, p = self.target(v, port, sp)
                    before, unit = self.cpu_snapshot(v), self.unit_start(v)
                    t = time.monotonic()
                    rate, errors, count = self.wrk_once(in_ns, p)
                    self.record("connrate_wrk", v, rate)
                    self.note_relay_cpu("connrate_wrk", before, time.monotonic() - t, v)
                    self.unit_done("connrate_wrk", v, unit, count)
                    if errors:
                        self.extra.setdefault("wrk errors", []).append("%s: %s" % (v, errors))
                    log("wrk+nginx round %d %-12s %.2f k conn/s%s" % (r + 1, v, rate,
                                                                     " (%s)" % errors if errors else ""))
                    self.pause(1.0)
            in_ns, p = self.target("lorelay", port, sp)
            self.profile("connrate_wrk", lambda: self.wrk_once(in_ns, p))
        finally:
            self.stop_all(chains)

    # ---- metric 5: idle connections, in three states

    def hold(self, variant, port, n):
        """n connections through `variant`, each proven relayed by a one-byte
        echo, held open. Returns (client Popen, connections opened)."""
        in_ns, p = self.target(variant, port, getattr(self, "idle_socat_ports", {}))
        argv = [PYTHON, LOADGEN, "hold", "127.0.0.1", str(p), str(n), str(self.a.idle_timeout)]
        if in_ns:
            argv = ["ip", "netns", "exec", self.ns] + argv
        cl = subprocess.Popen(argv,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
        self.procs.append(("holdcli", cl))
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in cl.stdout], daemon=True).start()
        line, end = "", time.monotonic() + self.a.idle_timeout + 10
        while not line.startswith("ready") and time.monotonic() < end:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                if cl.poll() is not None:
                    break
                continue
            if line.startswith("error"):
                log("idle %s: %s" % (variant, line.strip()))
                self.extra.setdefault("idle errors", []).append("%s: %s" % (variant, line.strip()))
        return cl, (int(line.split()[1]) if line.startswith("ready") else 0)

    def release(self, cl):
        if cl.stdin:
            cl.stdin.close()
        cl.wait(30)
        self.procs = [(nm, q) for nm, q in self.procs if q is not cl]

    def rss(self, relay):
        return rss_kib(relay.daemon.pid), rss_kib(relay.agent)

    def measure_idle(self, state, port):
        """RSS per held connection (lorelayd + agent) of each lorelay variant,
        in `state`: 'fresh', 'after throughput' or 'after churn'. The figure
        is (RSS with the connections held - RSS of the fresh daemon) / n, so
        memory a daemon kept from its history counts against its connections;
        the growth from just before they opened is in the detail too."""
        n = self.a.idle_conns
        for v in LORELAY_VARIANTS:
            r = self.relays.get(v)
            if r is None:
                continue
            self.pause(0.5)
            kbefore = kernel_kib()
            before = self.rss(r)
            fresh = self.rss_fresh.setdefault(v, before)
            cl, got = self.hold(v, port, n)
            self.pause(1.0)
            active = (self.port_entry(self.target(v, port, {})[1], r.sock) or {}).get("active")
            after = self.rss(r)
            kheld = kernel_kib()
            fds = (len(os.listdir("/proc/%d/fd" % r.daemon.pid)), len(os.listdir("/proc/%d/fd" % r.agent)))
            self.release(cl)
            self.pause(1.0)
            closed = self.rss(r)
            d = [after[i] - fresh[i] for i in range(2)]
            grew = [after[i] - before[i] for i in range(2)]
            per = (d[0] + d[1]) / got if got else None
            self.idle_mem.setdefault(state, {})[v] = {
                "requested": n, "opened": got, "active_in_status": active, "rss_fresh_kib": fresh,
                "rss_before_kib": before, "rss_after_kib": after, "rss_after_close_kib": closed,
                "delta_kib": d, "fds_at_peak": fds, "kib_per_conn": per,
                "kib_per_conn_split": [x / got for x in d] if got else None,
                "kib_per_conn_from_before": (grew[0] + grew[1]) / got if got else None,
                "kernel_kib_per_conn": (kheld - kbefore) / got if got else None}
            log("idle %s %-12s %d/%d open (status active %s), RSS (fresh/before->held) lorelayd "
                "%d/%d->%d KiB, agent %d/%d->%d KiB, %.2f KiB/conn"
                % (state, v, got, n, active, fresh[0], before[0], after[0], fresh[1], before[1], after[1],
                   per if per is not None else -1))

    def measure_idle_peers(self, port):
        """The same n idle connections held directly (the client inside the
        namespace: the kernel's own cost) and through each peer: user space
        as PSS of the peer's processes (socat forks one per connection), and
        kernel memory, reported over direct's. Measured last, once: RootlessKit
        keeps the pipes it spliced through (Go's pipe pool; thousands after
        5 000 connections), and they count against root's pipe quota, so any
        later process without CAP_SYS_RESOURCE (the two-hop agent) would get
        8 KiB pipes. The pipes each peer still holds after the release are
        recorded."""
        n = self.a.idle_conns
        chains, self.idle_socat_ports = self.with_socat(port, ["socat-256k"])
        pids = {"socat-256k": lambda: sum(([c.pid] + descendants(c.pid) for c in chains), [])}
        for v in PEER_VARIANTS:
            if v in self.peer_proc:
                pids[v] = lambda v=v: self.peer_pids(v)
        try:
            for v in ["direct"] + list(pids):
                self.pause(0.5)
                ubefore = pss_kib(pids[v]()) if v in pids else 0
                kbefore = kernel_kib()
                cl, got = self.hold(v, port, n)
                self.pause(1.0)
                uheld = pss_kib(pids[v]()) if v in pids else 0
                kheld = kernel_kib()
                self.release(cl)
                self.pause(1.0)
                pipes = count_pipes(pids[v]()) if v in pids else 0
                self.idle_mem.setdefault("peers", {})[v] = {
                    "requested": n, "opened": got, "pipes_after_release": pipes,
                    "user_kib_per_conn": (uheld - ubefore) / got if got else None,
                    "kernel_kib_per_conn": (kheld - kbefore) / got if got else None,
                    "pss_before_kib": ubefore, "pss_held_kib": uheld}
                log("idle peers %-12s %d/%d open, PSS %d->%d KiB, kernel %+d KiB, %d pipe fds "
                    "after the release" % (v, got, n, ubefore, uheld, kheld - kbefore, pipes))
        finally:
            self.stop_all(chains)
            self.idle_socat_ports = {}

    def churn(self, port):
        """n connections opened through each lorelay variant, then closed."""
        for v in LORELAY_VARIANTS:
            if v in self.relays:
                cl, got = self.hold(v, port, self.a.idle_conns)
                self.release(cl)
                log("churn %-12s %d connections opened and closed" % (v, got))

    # ---- metric 6: idle CPU

    def bench_idle_cpu(self):
        """Every agent's (and lorelayd's) CPU over the same quiet window."""
        secs = self.a.cpu_secs
        time.sleep(1.0)
        rel = list(self.relays.values())
        b_ns = [self.cpu_snapshot(r.variant) for r in rel]
        b_tk = [(cpu_ticks_s(r.daemon.pid), cpu_ticks_s(r.agent)) for r in rel]
        t = time.monotonic()
        time.sleep(secs)
        dt = time.monotonic() - t
        a_ns = [self.cpu_snapshot(r.variant) for r in rel]
        a_tk = [(cpu_ticks_s(r.daemon.pid), cpu_ticks_s(r.agent)) for r in rel]
        self.idle_cpu_all = {}
        for i, r in enumerate(rel):
            self.idle_cpu_all[r.variant] = {
                "seconds": round(dt, 2),
                "agent_pct": (a_ns[i][1] - b_ns[i][1]) / 1e9 / dt * 100,
                "lorelayd_pct": (a_ns[i][0] - b_ns[i][0]) / 1e9 / dt * 100,
                "agent_pct_from_stat_ticks": (a_tk[i][1] - b_tk[i][1]) / dt * 100,
                "lorelayd_pct_from_stat_ticks": (a_tk[i][0] - b_tk[i][0]) / dt * 100,
            }
            log("idle CPU %-12s over %.1f s: agent %.3f %%, lorelayd %.3f %% of a core"
                % (r.variant, dt, self.idle_cpu_all[r.variant]["agent_pct"],
                   self.idle_cpu_all[r.variant]["lorelayd_pct"]))
        self.idle_cpu = self.idle_cpu_all.get("lorelay")

    # ---- metric 7: detection latency

    def bench_detection(self):
        """scripts/measure-detection.py's trials, run against each lorelayd
        here: a `guestsrv.py detect` helper in the namespace listens on and
        closes a port of that variant's block (forwarded by that lorelayd
        only), and the host times when 127.0.0.1:P connects and is refused."""
        md = load_measure_detection()
        self.detection = {}
        for v in LORELAY_VARIANTS:
            r = self.relays.get(v)
            if r is None:
                continue
            helper = Proc(["ip", "netns", "exec", self.ns, PYTHON, "-u", GUESTSRV, "detect", "-", "0"],
                          os.path.join(self.tmp, "detect-%s.log" % v), stdin=True)
            self.procs.append(("detect-" + v, helper.p))
            recent = []

            def pick(block=self.det_ports[v]):
                for _ in range(500):
                    p = random.choice(block)
                    if p not in recent and port_is_free(p):
                        recent[:] = (recent + [p])[-20:]
                        return p
                raise RuntimeError("no free port left in %d-%d" % (block.start, block.stop - 1))
            try:
                helper.wait_event("ready", timeout=10.0)
                add, rem, timeouts = md.run_trials(helper, self.a.detection_trials, "0.0.0.0", pick)
                helper.send("quit")
            finally:
                self.stop(helper.p)
            g = (self.status(r.sock).get("guests") or [{}])[0]
            self.detection[v] = {"trials": self.a.detection_trials, "detection": g.get("detection"),
                                 "add_ms": md.summary(add), "remove_ms": md.summary(rem), "timeouts": timeouts}
            if timeouts:
                self.extra.setdefault("detection timeouts", []).append("%s: %d" % (v, timeouts))
            d = self.detection[v]
            log("detection %-12s (%s), %d trials: add p50 %.2f p99 %.2f ms, remove p50 %.2f p99 %.2f ms"
                % (v, d["detection"], d["trials"], d["add_ms"]["p50"], d["add_ms"]["p99"],
                   d["remove_ms"]["p50"], d["remove_ms"]["p99"]))

    # ---- run everything

    # ---- UDP: iperf3 -u at a fixed offered load, DNS queries/s (dnsperf)

    def udp_forwarding(self, port):
        """Waits for lorelay to forward the guest UDP socket on port."""
        def ok():
            try:
                st = self.status()
            except (OSError, ValueError):
                return False
            return any(pe.get("proto") == "udp" and pe.get("state") == "forwarding" and
                       pe.get("guest", "").endswith(":%d" % port)
                       for g in st.get("guests", []) for pe in g.get("ports", []))
        wait_for(ok, 10, "lorelay to forward UDP port %d" % port)

    def bench_udp(self):
        """UDP against direct: iperf3 -u at a fixed offered load both ways
        (received rate and loss), and DNS queries per second from dnsperf
        against dnsmasq in the guest (the flows are dnsperf's sockets).
        There is no socat row: a socat UDP chain keeps no per-client flows.

        iperf3 3.12 binds its UDP socket only once a test starts and its
        client's first datagram has no retry, so it would race the agent's
        UDP scan; a second [::]:P UDP socket (SO_REUSEADDR, as iperf3's own)
        keeps the stand-in up, as any long-lived UDP server would."""
        for tool in ("dnsmasq", "dnsperf"):
            if shutil.which(tool) is None:
                sys.exit("bench: %s is not installed (run scripts/deps.sh bench)" % tool)
        pu, pd = free_ports(2)
        rate = self.a.udp_rate
        keep = self.spawn("udp-keeper", [PYTHON, "-c",
                                         "import socket,time\n"
                                         "s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n"
                                         "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                                         "s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0)\n"
                                         "s.bind(('::',%d))\ntime.sleep(3600)" % pu], ns=True)
        srv = self.start_guest_server("iperf3-udp", ["iperf3", "-s", "-p", str(pu)], pu)
        self.udp_forwarding(pu)
        dns = self.spawn("dnsmasq", ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
                                     "--no-resolv", "--no-hosts", "--user=root", "--pid-file=",
                                     "--port=%d" % pd, "--address=/bench.test/10.0.0.1",
                                     "--listen-address=127.0.0.1", "--bind-interfaces",
                                     "--dns-forward-max=1000"], ns=True)
        self.udp_forwarding(pd)
        qfile = os.path.join(self.tmp, "queries.txt")
        with open(qfile, "w") as f:
            f.write("bench.test A\n" * 100)
        try:
            for r in range(self.a.rounds):
                for rev in ([], ["-R"]):
                    tag = "udp_rate_rev" if rev else "udp_rate"
                    for v in ("direct", "lorelay"):
                        cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(pu), "-u", "-b", rate,
                               "-l", "1400", "-t", str(self.a.iperf_secs), "-J"] + rev
                        if v == "direct":
                            cmd = ["ip", "netns", "exec", self.ns] + cmd
                        else:
                            # iperf3 -s reopens its TCP control listener after
                            # each test: wait for the stand-in to be back.
                            wait_for(lambda: tcp_listening(pu, self.ns), 10, "iperf3 to listen again")
                            self.wait_forwarding(pu)
                        before = self.cpu_snapshot()
                        t = time.monotonic()
                        out = subprocess.run(cmd, capture_output=True, text=True,
                                             timeout=self.a.iperf_secs + 20)
                        dt = time.monotonic() - t
                        j = json.loads(out.stdout)
                        if "error" in j:
                            raise RuntimeError("iperf3 -u %s: %s" % (v, j["error"]))
                        sm = j["end"]["sum"]
                        got = sm["bits_per_second"] * (1 - sm["lost_percent"] / 100.0) / 1e9
                        self.record(tag, v, got)
                        self.record(tag + "_loss", v, sm["lost_percent"])
                        if v == "lorelay":
                            self.note_relay_cpu(tag, before, dt)
                        log("iperf3 -u %s round %d %-8s offered %s: %.3f Gbit/s received, "
                            "%.2f %% lost" % (" ".join(rev) or "to guest", r + 1, v, rate, got,
                                              sm["lost_percent"]))
                        time.sleep(0.5)
                for v in ("direct", "lorelay"):
                    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(pd), "-d", qfile,
                           "-l", str(self.a.iperf_secs), "-c", "8", "-q", "200"]
                    if v == "direct":
                        cmd = ["ip", "netns", "exec", self.ns] + cmd
                    out = subprocess.run(cmd, capture_output=True, text=True,
                                         timeout=self.a.iperf_secs + 30)
                    qps = None
                    for line in out.stdout.splitlines():
                        if "Queries per second" in line:
                            qps = float(line.split()[-1]) / 1000.0
                        if "Queries lost" in line:
                            self.extra.setdefault("dns queries lost (%s)" % v, []).append(
                                line.split(":", 1)[1].strip())
                    if qps is None:
                        raise RuntimeError("dnsperf %s: no result: %s" % (v, out.stdout[-800:]
                                                                         + out.stderr[-400:]))
                    self.record("dns_qps", v, qps)
                    log("dnsperf round %d %-8s %.1f k queries/s" % (r + 1, v, qps))
                    time.sleep(0.5)
        finally:
            self.stop_all([dns, srv, keep])

    def run(self):
        self.facts = machine_facts(self.bin)
        log("load average at start: %s" % self.facts["loadavg_start"])
        only = set(self.a.only.split(",")) if self.a.only else None
        want = lambda m: only is None or m in only  # noqa: E731
        self.wanted = {g for g in GROUPS if want(g)}
        p_iperf, p_redis, p_close, p_hold, p_nginx = self.plan_ports()
        self.start_daemon()
        self.start_two_hop()
        self.start_pasta([p_iperf, p_redis, p_close, p_hold, p_nginx])
        self.start_rootlesskit([p_iperf, p_redis, p_close, p_hold, p_nginx])
        srv = []
        srv += self.start_guest_pair("iperf3", lambda p: ["iperf3", "-s", "-B", "0.0.0.0", "-p", str(p)],
                                     p_iperf)
        srv += self.start_guest_pair("redis", lambda p: [
            "redis-server", "--port", str(p), "--bind", "0.0.0.0", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
            "--dir", self.tmp, "--logfile", ""], p_redis)
        srv += self.start_guest_pair("closesrv", lambda p: [PYTHON, LOADGEN, "serve-close", str(p)], p_close)
        if want("wrk"):
            srv += self.start_guest_pair("nginx", self.nginx_argv, p_nginx)
        if want("idle"):
            n = self.a.idle_conns
            srv += self.start_guest_pair("holdsrv", lambda p: [PYTHON, LOADGEN, "serve-hold", str(p), str(n)],
                                         p_hold)
        if want("cpu"):
            self.bench_idle_cpu()
        if want("idle"):
            self.measure_idle("fresh", p_hold)
        if want("throughput"):
            self.bench_iperf(p_iperf)
            if want("idle"):
                self.measure_idle("after throughput", p_hold)
        if want("redis"):
            self.bench_redis(p_redis)
        if want("connrate"):
            self.bench_connrate(p_close)
        if want("wrk"):
            self.bench_wrk(p_nginx)
        if want("idle"):
            self.churn(p_hold)
            self.measure_idle("after churn", p_hold)
        if want("udp"):
            self.bench_udp()
        if want("idle"):
            self.measure_idle_peers(p_hold)
        for p in srv:
            self.stop(p)
        if want("detection"):
            self.bench_detection()
        self.facts["loadavg_end"] = open("/proc/loadavg").read().split()[:3]

# ------------------------------------------------------------------ reporting

def machine_facts(bin_dir):
    def first_line(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    commit = first_line(["git", "-C", os.path.dirname(HERE), "log", "-1", "--format=%h %cs"])
    build = "?"
    try:
        with open(os.path.join(bin_dir, "..", "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith("CMAKE_BUILD_TYPE:"):
                    build = line.split("=", 1)[1].strip() or "?"
    except OSError:
        pass
    return {
        "cpu": "%d x %s" % (os.cpu_count(), model),
        "kernel": platform.release(),
        "memory_mib": mem,
        "os": first_line(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "lorelay": "%s (%s, %s build)" % (first_line([os.path.join(bin_dir, "lorelayd"), "--version"]),
                                          commit, build),
        "iperf3": first_line(["iperf3", "--version"]),
        "redis": first_line(["redis-server", "--version"]),
        "socat": first_line(["sh", "-c", "socat -V | sed -n 2p"]),
        "pasta": first_line(["sh", "-c", "dpkg-query -W -f='passt ${Version}' passt"]),
        "rootlesskit": first_line(["rootlesskit", "--version"]),
        "nginx": first_line([tool("nginx") or "nginx", "-v"]),
        "wrk": " ".join(first_line([tool("wrk") or "wrk", "-v"]).split()[:2]),
        "python": platform.python_version(),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


# The rows with a direct figure: metric -> (label, unit, goal for lorelay
# one-hop as a ratio to direct, or None where the goals set none).
# The two-hop goal is to be ahead of the socat chain on every row; the
# one-hop goal on the rows in PEER_ROWS is also 1.05 x every peer.
GOALS = {
    "throughput": ("throughput host → guest (iperf3)", "Gbit/s", 0.75),
    "throughput_rev": ("throughput guest → host (iperf3 -R)", "Gbit/s", 0.75),
    "throughput_bidir": ("throughput both ways at once (iperf3 --bidir, sum)", "Gbit/s", None),
    "throughput_p4": ("throughput, 4 streams (iperf3 -P 4)", "Gbit/s", None),
    "ping_1": ("request/response, 1 client (redis PING)", "k req/s", None),
    "set_50": ("50 clients (redis SET)", "k req/s", None),
    "connrate_wrk": ("new connections (wrk + nginx, Connection: close)", "k conn/s", 0.55),
    "connrate": ("new connections (bench/loadgen.py)", "k conn/s", 0.55),
    "udp_rate": ("UDP iperf3 -u to guest, received at a fixed offered load", "Gbit/s", 0.5),
    "udp_rate_rev": ("UDP iperf3 -u -R (from guest), received", "Gbit/s", 0.5),
    "dns_qps": ("DNS queries/s (dnsperf, dnsmasq, 8 flows)", "k q/s", 0.5),
}
# Short labels for the chart's x axis, in GOALS order.
CHART_LABELS = {
    "throughput": "iperf3 h→g", "throughput_rev": "iperf3 g→h", "throughput_bidir": "iperf3 --bidir",
    "throughput_p4": "iperf3 -P 4", "ping_1": "PING 1 client", "set_50": "SET 50 clients",
    "connrate_wrk": "conn/s wrk+nginx", "connrate": "conn/s loadgen",
}
# Columns, in table and chart order: variant -> heading.
COLUMNS = (("socat", "socat 8 KiB"), ("socat-256k", "socat 256 KiB"),
           ("rootlesskit", "RootlessKit"), ("pasta", "pasta"),
           ("lorelay", "lorelay one-hop"), ("lorelay-2hop", "lorelay two-hop"))
# The relay's own CPU per unit of work, for the rows of PEER_ROWS: metric ->
# (label, unit, ns per unit shown).
UNIT_COST = {
    "throughput": ("throughput host → guest", "ms / GB", 1e6),
    "throughput_rev": ("throughput guest → host", "ms / GB", 1e6),
    "ping_1": ("redis PING, 1 client", "µs / request", 1e3),
    "set_50": ("redis SET, 50 clients", "µs / request", 1e3),
    "connrate_wrk": ("new connections, wrk + nginx", "µs / connection", 1e3),
    "connrate": ("new connections, load generator", "µs / connection", 1e3),
}
# Rows where one-hop must be ahead of every peer by this factor.
PEER_ROWS = ("throughput", "throughput_rev", "ping_1", "set_50", "connrate_wrk", "connrate")
PEER_FACTOR = 1.05
IDLE_STATES = ("fresh", "after throughput", "after churn")
# --only group -> the rows it must produce (a group that ran and left a row
# empty fails the run, as does a row without a number).
GROUPS = {
    "cpu": ["agent idle CPU"],
    "throughput": [m for m in GOALS if m.startswith("throughput")],
    "redis": ["ping_1", "set_50"],
    "connrate": ["connrate"],
    "wrk": ["connrate_wrk"],
    "idle": ["idle memory, " + st for st in IDLE_STATES],
    "detection": ["detection add", "detection remove"],
}
IDLE_GOAL_KIB = 8.0
CPU_GOAL_PCT = 0.1
DETECTION_GOAL_MS = 10.0
TWO_HOP_THROUGHPUT = 0.65


def fmt(x, nd=2):
    return "—" if x is None else ("%.*f" % (nd, x))


def spread(xs):
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(xs[0])
    return "%s (%s–%s)" % (fmt(median(xs)), fmt(min(xs)), fmt(max(xs)))


def ratios(res):
    """metric -> variant -> median / direct median, for the measured rows."""
    out = {}
    for m in GOALS:
        r = res.get(m)
        if not r:
            continue
        d = median(r.get("direct"))
        out[m] = {v: (median(r[v]) / d if d and r.get(v) else None) for v, _ in COLUMNS}
    return out


def yes(ok):
    return "—" if ok is None else ("yes" if ok else "**no**")


def report(b):
    """Markdown tables (figures; ratios to direct; the rows without a direct
    figure), the summary of goals, and the list of rows that produced no number."""
    res, lines, missing, summary = b.results, [], [], {}
    add = lines.append
    heads = " | ".join(h for _, h in COLUMNS)
    add("| metric | unit | direct | %s |" % heads)
    add("|---|---|---|" + "---|" * len(COLUMNS))
    for m, (label, unit, _goal) in GOALS.items():
        if m not in res:
            continue
        r = res[m]
        add("| %s | %s | %s | %s |" % (label, unit, spread(r.get("direct")),
                                       " | ".join(spread(r.get(v)) for v, _ in COLUMNS)))
        # A row added elsewhere may measure fewer variants; direct and
        # one-hop it must have.
        expected = b.expected_variants if m in CHART_LABELS else {"direct", "lorelay"}
        for v in ("direct",) + tuple(v for v, _ in COLUMNS):
            if v in expected and not r.get(v):
                missing.append("%s: %s" % (label, v))
    add("")
    add("Ratios to direct (medians, same run):")
    add("")
    add("| metric | %s | goal, one-hop | one-hop met | one-hop ≥ %.2f × every peer | two-hop ahead of socat |"
        % (heads, PEER_FACTOR))
    add("|---|" + "---|" * (len(COLUMNS) + 4))
    for m, rr in ratios(res).items():
        label, _unit, goal = GOALS[m]
        one, two = rr.get("lorelay"), rr.get("lorelay-2hop")
        socats = [x for x in (rr.get("socat"), rr.get("socat-256k")) if x is not None]
        met = None if goal is None or one is None else one >= goal
        peers = [rr.get(v) for v in PEER_VARIANTS]
        beat = None
        if m in PEER_ROWS and one is not None and all(x is not None for x in peers):
            beat = all(one >= PEER_FACTOR * x for x in peers)
        ahead = None
        if two is not None and socats:
            ahead = two > max(socats)
            if m in ("throughput", "throughput_rev"):
                ahead = ahead and two >= TWO_HOP_THROUGHPUT
        summary[m] = {"ratios": rr, "one_hop_met": met, "one_hop_beats_peers": beat, "two_hop_ahead": ahead}
        cells = []
        for v, _ in COLUMNS:
            x = fmt(rr.get(v))
            cells.append("**%s**" % x if v.startswith("lorelay") and rr.get(v) is not None else x)
        add("| %s | %s | %s | %s | %s | %s |" % (label, " | ".join(cells),
                                                 "≥ %.2f × direct" % goal if goal else "—",
                                                 yes(met), yes(beat), yes(ahead)))
    uc = getattr(b, "unit_cpu", {})
    if uc:
        add("")
        add("What each relay's own processes spent per unit of work (CPU time over the run, "
            "medians; lower is better; lorelay one-hop over the cheapest peer in the last column):")
        add("")
        add("| row | unit | %s | one-hop ÷ cheapest peer |" % heads)
        add("|---|---|" + "---|" * (len(COLUMNS) + 1))
        costs = {}
        for m, (label, unit, _scale) in UNIT_COST.items():
            if m not in uc:
                continue
            med = {v: median(uc[m].get(v)) for v, _ in COLUMNS}
            peers = [med[v] for v in PEER_VARIANTS if med.get(v)]
            rel = med["lorelay"] / min(peers) if med.get("lorelay") and peers else None
            costs[m] = {"per_unit": med, "one_hop_over_cheapest_peer": rel}
            add("| %s | %s | %s | %s |" % (label, unit, " | ".join(fmt(med[v], 1) for v, _ in COLUMNS), fmt(rel)))
        summary["relay cpu per unit"] = costs
    for m, label in (("udp_rate_loss", "UDP loss, to guest"), ("udp_rate_rev_loss", "UDP loss, from guest")):
        if m not in res:
            continue
        if m == "udp_rate_loss":
            add("")
            add("UDP loss at the fixed offered load (goal: no loss above the direct path's):")
            add("")
            add("| metric | direct | lorelay one-hop | met |")
            add("|---|---|---|---|")
        d, lo = median(res[m].get("direct")), median(res[m].get("lorelay"))
        met = d is not None and lo is not None and lo <= max(d, 0.01)
        summary[m] = {"direct": d, "lorelay": lo, "met": met}
        add("| %s | %s %% | %s %% | %s |" % (label, spread(res[m].get("direct")),
                                           spread(res[m].get("lorelay")), yes(met)))
    add("")
    add("Rows without a direct figure (lorelay only):")
    add("")
    add("| metric | unit | lorelay one-hop | lorelay two-hop | goal, one-hop | one-hop met |")
    add("|---|---|---|---|---|---|")
    for state in IDLE_STATES:
        st = b.idle_mem.get(state)
        if st is None:
            continue
        cells, per1 = [], None
        for v in LORELAY_VARIANTS:
            i = st.get(v)
            if i is None or i["kib_per_conn"] is None:
                cells.append("—")
                missing.append("idle memory %s: %s" % (state, v))
                continue
            sp = i["kib_per_conn_split"]
            cells.append("**%s** (lorelayd %s + agent %s)" % (fmt(i["kib_per_conn"]), fmt(sp[0]), fmt(sp[1])))
            if v == "lorelay":
                per1 = i["kib_per_conn"] if i["opened"] == i["requested"] else None
        n = max((i["opened"] for i in st.values()), default=0)
        met = per1 is not None and per1 <= IDLE_GOAL_KIB
        summary["idle " + state] = {v: i["kib_per_conn"] for v, i in st.items()}
        add("| idle memory, %s (%d connections) | KiB RSS / conn | %s | ≤ %.0f KiB | %s |"
            % (state, n, " | ".join(cells), IDLE_GOAL_KIB, yes(met)))
    pe = b.idle_mem.get("peers")
    if pe:
        add("")
        add("Idle connections against the peers, measured last (%d held; user space as PSS of the relay's processes; "
            "kernel over direct's, which is the cost of the connection itself):" % b.a.idle_conns)
        add("")
        add("| path | user KiB / conn | kernel KiB / conn over direct | total |")
        add("|---|---|---|---|")
        d = (pe.get("direct") or {}).get("kernel_kib_per_conn")
        fresh = b.idle_mem.get("fresh", {})
        rows = [(v, h) for v, h in COLUMNS if v in pe or v in fresh]
        totals = {}
        for v, h in rows:
            if v in pe:
                u, k = pe[v]["user_kib_per_conn"], pe[v]["kernel_kib_per_conn"]
            else:
                u, k = fresh[v]["kib_per_conn"], fresh[v].get("kernel_kib_per_conn")
            over = k - d if k is not None and d is not None else None
            tot = u + over if u is not None and over is not None else None
            totals[v] = tot
            add("| %s | %s | %s | %s |" % (h, fmt(u), fmt(over), fmt(tot)))
        one = totals.get("lorelay")
        others = [totals.get(v) for v in PEER_VARIANTS + ("socat-256k",)]
        below = None if one is None or any(x is None for x in others) else all(one < x for x in others)
        summary["idle vs peers"] = {"total_kib_per_conn": totals, "one_hop_below_every_peer": below}
        add("")
        add("One-hop below every peer (user + kernel): %s" % yes(below))
        add("")
    det = getattr(b, "detection", None)
    if det:
        for what, key in (("add", "add_ms"), ("remove", "remove_ms")):
            cells, met, trials = [], None, 0
            for v in LORELAY_VARIANTS:
                d = det.get(v)
                s = d[key] if d else None
                if s is None or not s["n"] or s["p99"] != s["p99"]:  # NaN when no sample
                    cells.append("—")
                    missing.append("detection %s: %s" % (what, v))
                    continue
                trials = d["trials"]
                cells.append("**%s / %s** (%s)" % (fmt(s["p50"]), fmt(s["p99"]), d["detection"]))
                summary.setdefault("detection " + what, {})[v] = {"p50": s["p50"], "p99": s["p99"]}
                if v == "lorelay":
                    met = s["p99"] <= DETECTION_GOAL_MS
            add("| detection %s, %d trials: p50 / p99 | ms | %s | p99 ≤ %.0f ms | %s |"
                % (what, trials, " | ".join(cells), DETECTION_GOAL_MS, yes(met)))
    ic = getattr(b, "idle_cpu_all", None)
    if ic:
        cells = []
        for v in LORELAY_VARIANTS:
            c = ic.get(v)
            if c is None:
                cells.append("—")
                missing.append("agent idle CPU: %s" % v)
            else:
                cells.append("**%s** (lorelayd %s)" % (fmt(c["agent_pct"], 3), fmt(c["lorelayd_pct"], 3)))
        one = ic.get("lorelay")
        met = one is not None and one["agent_pct"] <= CPU_GOAL_PCT
        summary["idle_cpu"] = {v: c["agent_pct"] for v, c in ic.items()}
        add("| agent idle CPU (%.0f s) | %% of a core | %s | ≤ %.1f %% | %s |"
            % (next(iter(ic.values()))["seconds"], " | ".join(cells), CPU_GOAL_PCT, yes(met)))
    done = set(res) | {"idle memory, " + st for st in b.idle_mem}
    if ic:
        done.add("agent idle CPU")
    if det:
        done |= {"detection add", "detection remove"}
    for g in sorted(getattr(b, "wanted", ())):
        for row in GROUPS[g]:
            # "after throughput" is measured only when throughput runs too
            if row not in done and not (row == "idle memory, after throughput" and "throughput" not in b.wanted):
                missing.append("%s (never measured)" % row)
    return "\n".join(lines), summary, missing


CHART_COLOURS = ("#f4a261", "#e9c46a", "#8d99ae", "#7b2cbf", "#2a9d8f", "#264653")


def draw_chart(b, path, gnuplot="gnuplot"):
    """A clustered bar chart of the ratios to direct (direct = 1, the two
    socat chains, lorelay one-hop and two-hop), one cluster per row, drawn
    by gnuplot: SVG for a name ending in .svg, else PNG."""
    rr = ratios(b.results)
    if not rr:
        raise RuntimeError("no row with a direct figure to chart")
    data = os.path.join(b.tmp if os.path.isdir(b.tmp) else tempfile.gettempdir(),
                        "ratios-%d.dat" % os.getpid())
    with open(data, "w") as f:
        f.write("row\tdirect\t%s\n" % "\t".join(h for _, h in COLUMNS))
        for m, r in rr.items():
            f.write('"%s"\t1\t%s\n' % (CHART_LABELS.get(m, m), "\t".join(
                "NaN" if r.get(v) is None else "%.4f" % r[v] for v, _ in COLUMNS)))
    f_ = b.facts
    title = "lorelay benchmark: ratio to direct (same run; %s, %s rounds)" % (f_["cpu"], b.a.rounds)
    term = ("set terminal svg size 1100,520 dynamic enhanced font 'sans,12' background rgb 'white'"
            if path.endswith(".svg") else
            "set terminal pngcairo size 1100,520 enhanced font 'sans,11' background rgb 'white'")
    script = "\n".join([
        term,
        "set output '%s'" % path.replace("'", "''"),
        "set datafile separator '\\t'",
        "set datafile missing 'NaN'",
        "set title '%s'" % title.replace("'", "''"),
        "set style data histograms",
        "set style histogram clustered gap 1.5",
        "set style fill solid 0.85 border -1",
        "set boxwidth 0.95",
        "set key outside right top vertical",
        "set ylabel 'ratio to direct (direct = 1)'",
        "set yrange [0:1.1<*]",
        "set grid ytics",
        "set xtics rotate by -25 nomirror",
        "set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dashtype 2 lw 1.5 lc rgb '#555555'",
        "plot '%s' using 2:xtic(1) title columnheader(2) lc rgb '#b0b0b0', \\" % data]
        + ["  '' using %d title columnheader(%d) lc rgb '%s'%s" % (i + 3, i + 3, c,
                                                                ", \\" if i + 1 < len(COLUMNS) else "")
           for i, c in enumerate(CHART_COLOURS[:len(COLUMNS)])]
        + [""])
    r = subprocess.run([gnuplot], input=script, capture_output=True, text=True, timeout=60)
    os.unlink(data)
    if r.returncode != 0 or not os.path.exists(path) or os.path.getsize(path) == 0:
        raise RuntimeError("gnuplot failed (rc %d): %s" % (r.returncode, r.stderr.strip()[-1000:]))


SMOKE = {
    # seconds-long: every row once, tiny sizes (the ctest bench_smoke)
    "rounds": 1, "iperf_bytes": 20 << 20, "iperf_secs": 1, "ping_n": 300, "set_n": 2000, "conn_secs": 0.5,
    "wrk_secs": 1, "wrk_conns": 4, "idle_conns": 200, "idle_timeout": 30.0, "cpu_secs": 1.0,
    "detection_trials": 5, "pause": 0.1, "max_seconds": 180,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("LORELAY_BIN_DIR",
                                                        os.path.join(HERE, "..", "build", "linux", "bin")))
    ap.add_argument("--rounds", type=int, default=3, help="runs of each throughput/rate metric (median shown)")
    ap.add_argument("--iperf-secs", type=int, default=5)
    ap.add_argument("--iperf-bytes", type=int, default=0, help="iperf3 -n BYTES instead of -t (smoke runs)")
    ap.add_argument("--ping-n", type=int, default=20000)
    ap.add_argument("--set-n", type=int, default=100000)
    ap.add_argument("--redis-timeout", type=int, default=120)
    ap.add_argument("--conn-secs", type=float, default=4.0)
    ap.add_argument("--conn-clients", type=int, default=2, help="concurrent connect-loop client processes")
    ap.add_argument("--wrk-secs", type=int, default=4)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--wrk-conns", type=int, default=10, help="wrk -c: connections kept busy")
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--idle-timeout", type=float, default=120.0)
    ap.add_argument("--cpu-secs", type=float, default=10.0)
    ap.add_argument("--detection-trials", type=int, default=120)
    ap.add_argument("--pause", type=float, default=1.0, help="scale of the settling pauses between runs")
    ap.add_argument("--only", default="",
                    help="comma list of: cpu,throughput,redis,connrate,wrk,idle,detection,udp")
    ap.add_argument("--udp-rate", default="300M", help="iperf3 -u offered load (-b) for the udp rows")
    ap.add_argument("--json", help="also write all samples and facts to this file")
    ap.add_argument("--chart", help="draw the ratios to direct with gnuplot into FILE (.svg, else PNG)")
    ap.add_argument("--smoke", action="store_true",
                    help="seconds-long run of every row with tiny sizes (what ctest bench_smoke runs)")
    ap.add_argument("--max-seconds", type=int, default=3600, help="overall limit")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="one extra lorelay one-hop run of PING, SET and wrk under perf record: "
                         "the relays' kernel share and system calls (not counted in the results)")
    if "--smoke" in sys.argv[1:]:
        ap.set_defaults(**SMOKE)
    a = ap.parse_args()
    a.bin_dir = os.path.abspath(a.bin_dir)
    if os.geteuid() != 0:
        lrci.exit_skip_or_fail("must run as root (it creates a network namespace)", "bench")
    tools = list(TOOLS) + (["gnuplot"] if a.chart else []) + (["perf"] if a.profile else [])
    gone = [t for t in tools if tool(t) is None]
    if gone:
        lrci.exit_skip_or_fail("not installed: %s (run scripts/deps.sh bench)" % ", ".join(gone), "bench")
    for exe in ("lorelayd", "lorelay-init", "lorelay-agent"):
        if not os.access(os.path.join(a.bin_dir, exe), os.X_OK):
            sys.exit("bench: %s not built in %s (set LORELAY_BIN_DIR or --bin-dir)" % (exe, a.bin_dir))
    if not 1 <= a.rounds <= 10 or not 1 <= a.idle_conns <= 9000 or not 1 <= a.detection_trials <= 1000:
        sys.exit("bench: --rounds must be 1..10, --idle-conns 1..9000 and --detection-trials 1..1000")

    def on_signal(signum, _frame):
        raise SystemExit("bench: stopped by signal %d" % signum)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    signal.alarm(a.max_seconds)

    b = Bench(a)
    try:
        b.run()
        if a.chart:
            draw_chart(b, os.path.abspath(a.chart), tool("gnuplot"))
    finally:
        signal.alarm(0)
        b.cleanup()
    table, summary, missing = report(b)
    if a.profile:
        # Only a process that must be busy during the row must have samples:
        # lorelayd, which relays every byte of every row. The one-hop agent
        # is out of the data path and takes part in a connection's setup at
        # most, so it may sleep through a whole row (a few long-lived redis
        # connections) and perf then has nothing of it: its profile is
        # printed when perf caught it, never required.
        rows = ([m for m in ("ping_1", "set_50") if "redis" in b.wanted] +
                (["connrate_wrk"] if "wrk" in b.wanted else []))
        for m in rows:
            if not getattr(b, "profiles", {}).get(m, {}).get("lorelayd", {}).get("samples"):
                missing.append("profile of %s: lorelayd" % m)
    f = b.facts
    print()
    print("Machine: %s, %d MiB, Linux %s, %s" % (f["cpu"], f["memory_mib"], f["kernel"], f["os"]))
    print("Versions: %s; %s; %s; %s; %s; %s; %s; %s; python %s"
          % (f["lorelay"], f["iperf3"], f["redis"], f["socat"], f["pasta"], f["rootlesskit"],
             f["nginx"], f["wrk"], f["python"]))
    print("Load average at start %s, at end %s; rounds per metric: %d (median, range in brackets)"
          % (" ".join(f["loadavg_start"]), " ".join(f.get("loadavg_end", ["?"])), a.rounds))
    print("Command: %s" % " ".join(["bench/run.sh"] + sys.argv[1:]))
    print()
    print(table)
    print()
    for k, v in b.extra.items():
        print("- %s: %s" % (k, v))
    for state, per in b.idle_mem.items():
        print("- idle detail, %s: %s" % (state, json.dumps(per)))
    if getattr(b, "idle_cpu_all", None):
        print("- idle CPU detail: %s" % json.dumps({v: {k: round(x, 4) for k, x in c.items()}
                                                    for v, c in b.idle_cpu_all.items()}))
    for metric, per in getattr(b, "profiles", {}).items():
        for comm, o in per.items():
            print("- profile, %s, %s (under perf): %s %% of a core; in the kernel %s %% of its "
                  "samples; in each system call, with the TCP work it does on loopback: %s"
                  % (metric, comm, o["cpu_pct"], o.get("kernel_pct"),
                     ", ".join("%s %s %%" % kv for kv in o.get("syscalls", []))))
    if a.chart:
        print("- chart: %s" % os.path.abspath(a.chart))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"facts": f, "samples": b.results, "relay_cpu_per_unit": b.unit_cpu,
                       "extra": b.extra, "summary": summary,
                       "idle_memory": b.idle_mem, "idle_cpu": getattr(b, "idle_cpu_all", None),
                       "detection": getattr(b, "detection", None), "missing": missing,
                       "profiles": getattr(b, "profiles", None),
                       "args": vars(a)}, fh, indent=1)
    if missing:
        print("bench: FAIL: no number for %s" % "; ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
