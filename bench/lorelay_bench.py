#!/usr/bin/env python3
"""lorelay's own benchmark against the peers a user would otherwise pick.

One topology for everything: the client on the host, the server in a guest
network namespace that this script creates (through `lorelayd --netns`),
so every peer is measured side by side in one run on the same machine:

  direct     client and server both inside the namespace, on its loopback
             (the limit: what the guest itself gets)
  lorelay    host 127.0.0.1:P -> lorelayd -> Unix socket -> lorelay-agent -> server
  socat      the chain WSL-like relays amount to: socat on the host
             (TCP-LISTEN -> UNIX-CONNECT), socat in the namespace
             (UNIX-LISTEN -> TCP:127.0.0.1:P), fork per connection; with
             socat's default 8 KiB buffer, and with -b 262144 for throughput

Metrics: iperf3 single-stream throughput, redis PING with 1 client, redis
SET with 50 clients, new connections per second, RSS per idle relayed
connection, and the idle CPU of lorelay-agent (and lorelayd); UDP (udp):
iperf3 -u received rate and loss at a fixed offered load both ways, and DNS
queries per second (dnsperf against dnsmasq), against direct only.

Traffic goes only to 127.0.0.1 on the host and to the namespace's own
loopback. Every run and every wait is bounded; the whole script has an
overall alarm. On any exit, processes it started are stopped by pid and the
namespace is deleted.
"""

import argparse
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
PYTHON = sys.executable or "python3"


def log(msg):
    print("[bench %6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


T0 = time.monotonic()


# ------------------------------------------------------------------ helpers

# Port picking is the e2e harness's (random, below the ephemeral range,
# free on both loopbacks): one implementation for tests and benchmark.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from lrharness import free_ports, read_status  # noqa: E402


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


def descendants(pid):
    kids, out, todo = proc_children(), [], [pid]
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


def cpu_ticks_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def median(xs):
    return statistics.median(xs) if xs else None


# ------------------------------------------------------------------ the bench

class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = args.bin_dir
        self.ns = "lrbench-%d" % os.getpid()
        self.tmp = tempfile.mkdtemp(prefix="lrbench-")
        self.procs = []          # (name, Popen) we started, stopped in reverse order
        self.daemon = None
        self.results = {}        # metric -> variant -> [samples]
        self.extra = {}          # diagnostics
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

    def status(self):
        return read_status(self.sock)

    def port_entry(self, port):
        try:
            st = self.status()
        except (OSError, ValueError):
            return None
        for g in st.get("guests", []):
            for pe in g.get("ports", []):
                if pe.get("guest", "").endswith(":%d" % port):
                    return pe
        return None

    def start_daemon(self):
        self.sock = os.path.join(self.tmp, "status.sock")
        cfg = os.path.join(self.tmp, "lorelay.ini")
        with open(cfg, "w") as f:
            f.write("[lorelay]\nlogLevel = warn\n")
        self.daemon = self.spawn("lorelayd", [os.path.join(self.bin, "lorelayd"), "--netns", self.ns,
                                              "--name", self.ns, "--socket", self.sock, "-c", cfg])
        self.ns_created = True

        def connected():
            if self.daemon.poll() is not None:
                raise RuntimeError("lorelayd exited (rc %s): %s"
                                   % (self.daemon.returncode, self.logtext("lorelayd")[-2000:]))
            try:
                st = self.status()
            except (OSError, ValueError):
                return False
            return any(g.get("state") == "connected" for g in st.get("guests", []))
        wait_for(connected, 10, "lorelayd to connect to its agent")
        agents = [p for p in descendants(self.daemon.pid) if comm(p) == "lorelay-agent"]
        if len(agents) != 1:
            raise RuntimeError("expected one lorelay-agent under lorelayd, found %r" % agents)
        self.agent = agents[0]
        log("lorelayd pid %d, agent pid %d, namespace %s" % (self.daemon.pid, self.agent, self.ns))

    def wait_forwarding(self, port):
        wait_for(lambda: (self.port_entry(port) or {}).get("state") == "forwarding", 10,
                 "lorelay to forward port %d" % port)

    # ---- guest servers and socat chains

    def start_guest_server(self, name, argv, port):
        p = self.spawn(name, argv, ns=True)

        def listening():
            if p.poll() is not None:
                raise RuntimeError("%s exited: %s" % (name, self.logtext(name)[-1500:]))
            return tcp_listening(port, self.ns)
        wait_for(listening, 10, "%s to listen" % name)
        self.wait_forwarding(port)
        return p

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

    def variants(self, with_256k):
        v = ["direct", "lorelay", "socat"]
        if with_256k:
            v.append("socat-256k")
        return v

    def target(self, variant, port, socat_ports):
        """(in_namespace, port) a client uses for this variant."""
        if variant == "direct":
            return True, port
        if variant == "lorelay":
            return False, port
        return False, socat_ports[variant]

    def record(self, metric, variant, value):
        self.results.setdefault(metric, {}).setdefault(variant, []).append(value)

    def cpu_snapshot(self):
        return cpu_ns(self.daemon.pid), cpu_ns(self.agent)

    def note_relay_cpu(self, metric, before, secs):
        after = self.cpu_snapshot()
        d = [(after[i] - before[i]) / 1e9 / secs * 100 for i in range(2)]
        self.extra.setdefault(metric + " relay CPU % of a core (lorelayd, agent)", []).append(
            [round(d[0], 1), round(d[1], 1)])

    def with_socat(self, target_port, names):
        ports = free_ports(len(names))
        chains, socat_ports = [], {}
        for name, hp in zip(names, ports):
            chains += self.start_socat(target_port, hp, 262144 if name == "socat-256k" else None)
            socat_ports[name] = hp
        return chains, socat_ports

    # ---- metric 1: iperf3

    def bench_iperf(self, port):
        names = ["socat", "socat-256k"]
        chains, sp = self.with_socat(port, names)
        try:
            for r in range(self.a.rounds):
                for v in self.variants(True):
                    in_ns, p = self.target(v, port, sp)
                    cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(p), "-t", str(self.a.iperf_secs),
                           "-J", "--connect-timeout", "3000"]
                    if in_ns:
                        cmd = ["ip", "netns", "exec", self.ns] + cmd
                    before = self.cpu_snapshot()
                    t = time.monotonic()
                    out = subprocess.run(cmd, capture_output=True, text=True,
                                         timeout=self.a.iperf_secs + 20)
                    dt = time.monotonic() - t
                    j = json.loads(out.stdout)
                    if "error" in j:
                        raise RuntimeError("iperf3 %s: %s" % (v, j["error"]))
                    gbps = j["end"]["sum_received"]["bits_per_second"] / 1e9
                    self.record("throughput", v, gbps)
                    if v == "lorelay":
                        self.note_relay_cpu("throughput", before, dt)
                    log("iperf3 round %d %-10s %.2f Gbit/s" % (r + 1, v, gbps))
                    time.sleep(0.5)
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
        chains, sp = self.with_socat(port, ["socat"])
        try:
            for metric, test, c, n, row in (("ping_1", "ping", 1, self.a.ping_n, "PING_MBULK"),
                                            ("set_50", "set", 50, self.a.set_n, "SET")):
                for r in range(self.a.rounds):
                    for v in self.variants(False):
                        in_ns, p = self.target(v, port, sp)
                        before = self.cpu_snapshot()
                        t = time.monotonic()
                        rows = self.redis_bench(in_ns, p, test, c, n)
                        dt = time.monotonic() - t
                        self.record(metric, v, rows[row] / 1000)
                        if v == "lorelay":
                            self.note_relay_cpu(metric, before, dt)
                        log("redis %s round %d %-10s %s" % (metric, r + 1, v,
                                                            ", ".join("%s %.1f k/s" % (k, x / 1000)
                                                                      for k, x in rows.items())))
                        time.sleep(0.3)
        finally:
            self.stop_all(chains)

    # ---- metric 4: new connections per second

    def bench_connrate(self, port):
        chains, sp = self.with_socat(port, ["socat"])
        try:
            for r in range(self.a.rounds):
                for v in self.variants(False):
                    in_ns, p = self.target(v, port, sp)
                    argv = [PYTHON, LOADGEN, "connrate", "127.0.0.1", str(p), str(self.a.conn_secs)]
                    if in_ns:
                        argv = ["ip", "netns", "exec", self.ns] + argv
                    before = self.cpu_snapshot()
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
                    if v == "lorelay":
                        self.note_relay_cpu("connrate", before, dt)
                    if err:
                        self.extra.setdefault("connrate errors", []).append("%s: %d" % (v, err))
                    log("connrate round %d %-10s %.2f k/s (%d errors)" % (r + 1, v, rate, err))
                    time.sleep(1.0)
        finally:
            self.stop_all(chains)

    # ---- metric 5: idle connections

    def bench_idle(self, port):
        n = self.a.idle_conns
        srv = self.start_guest_server("holdsrv", [PYTHON, LOADGEN, "serve-hold", str(port), str(n)], port)
        try:
            time.sleep(0.5)
            before = (rss_kib(self.daemon.pid), rss_kib(self.agent))
            cl = subprocess.Popen([PYTHON, LOADGEN, "hold", "127.0.0.1", str(port), str(n),
                                   str(self.a.idle_timeout)],
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
                    continue
                if line.startswith("error"):
                    log("idle: " + line.strip())
                    self.extra.setdefault("idle errors", []).append(line.strip())
            got = int(line.split()[1]) if line.startswith("ready") else 0
            time.sleep(1.0)
            active = (self.port_entry(port) or {}).get("active")
            after = (rss_kib(self.daemon.pid), rss_kib(self.agent))
            fds = (len(os.listdir("/proc/%d/fd" % self.daemon.pid)),
                   len(os.listdir("/proc/%d/fd" % self.agent)))
            cl.stdin.close()
            cl.wait(30)
            self.procs = [(nm, q) for nm, q in self.procs if q is not cl]
            time.sleep(1.0)
            closed = (rss_kib(self.daemon.pid), rss_kib(self.agent))
            d = [after[i] - before[i] for i in range(2)]
            per = (d[0] + d[1]) / got if got else None
            self.idle = {"requested": n, "opened": got, "active_in_status": active,
                         "rss_before_kib": before, "rss_after_kib": after,
                         "rss_after_close_kib": closed, "delta_kib": d,
                         "fds_at_peak": fds,
                         "kib_per_conn": per,
                         "kib_per_conn_split": [x / got for x in d] if got else None}
            log("idle: %d/%d open (status active %s), RSS lorelayd %d->%d KiB, agent %d->%d KiB, "
                "%.2f KiB/conn" % (got, n, active, before[0], after[0], before[1], after[1], per or -1))
        finally:
            self.stop(srv)

    # ---- metric 6: idle CPU

    def bench_idle_cpu(self):
        secs = self.a.cpu_secs
        time.sleep(1.0)
        b_ns = self.cpu_snapshot()
        b_tk = (cpu_ticks_s(self.daemon.pid), cpu_ticks_s(self.agent))
        t = time.monotonic()
        time.sleep(secs)
        dt = time.monotonic() - t
        a_ns = self.cpu_snapshot()
        a_tk = (cpu_ticks_s(self.daemon.pid), cpu_ticks_s(self.agent))
        self.idle_cpu = {
            "seconds": round(dt, 2),
            "agent_pct": (a_ns[1] - b_ns[1]) / 1e9 / dt * 100,
            "lorelayd_pct": (a_ns[0] - b_ns[0]) / 1e9 / dt * 100,
            "agent_pct_from_stat_ticks": (a_tk[1] - b_tk[1]) / dt * 100,
            "lorelayd_pct_from_stat_ticks": (a_tk[0] - b_tk[0]) / dt * 100,
        }
        log("idle CPU over %.1f s: agent %.3f %%, lorelayd %.3f %% of a core"
            % (dt, self.idle_cpu["agent_pct"], self.idle_cpu["lorelayd_pct"]))

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
        self.start_daemon()
        p_iperf, p_redis, p_close, p_hold = free_ports(4)
        srv = []
        srv.append(self.start_guest_server("iperf3", ["iperf3", "-s", "-B", "0.0.0.0", "-p", str(p_iperf)],
                                           p_iperf))
        srv.append(self.start_guest_server("redis", [
            "redis-server", "--port", str(p_redis), "--bind", "0.0.0.0", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
            "--dir", self.tmp, "--logfile", ""], p_redis))
        srv.append(self.start_guest_server("closesrv", [PYTHON, LOADGEN, "serve-close", str(p_close)],
                                           p_close))
        only = set(self.a.only.split(",")) if self.a.only else None
        want = lambda m: only is None or m in only  # noqa: E731
        if want("cpu"):
            self.bench_idle_cpu()
        if want("throughput"):
            self.bench_iperf(p_iperf)
        if want("redis"):
            self.bench_redis(p_redis)
        if want("connrate"):
            self.bench_connrate(p_close)
        if want("idle"):
            self.bench_idle(p_hold)
        if want("udp"):
            self.bench_udp()
        for p in srv:
            self.stop(p)
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
    return {
        "cpu": "%d x %s" % (os.cpu_count(), model),
        "kernel": platform.release(),
        "memory_mib": mem,
        "os": first_line(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "lorelay": first_line([os.path.join(bin_dir, "lorelayd"), "--version"]) + " (" + commit + ")",
        "iperf3": first_line(["iperf3", "--version"]),
        "redis": first_line(["redis-server", "--version"]),
        "socat": first_line(["sh", "-c", "socat -V | sed -n 2p"]),
        "python": platform.python_version(),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


GOALS = {
    # metric: (label, unit, lorelay/direct must be >= this)
    "throughput": ("single-stream throughput (iperf3)", "Gbit/s", 0.7),
    "ping_1": ("request/response, 1 client (redis PING)", "k req/s", 0.5),
    "set_50": ("50 clients (redis SET)", "k req/s", 0.6),
    "connrate": ("new connections per second", "k conn/s", 0.5),
    "udp_rate": ("UDP iperf3 -u to guest, received at a fixed offered load", "Gbit/s", 0.5),
    "udp_rate_rev": ("UDP iperf3 -u -R (from guest), received", "Gbit/s", 0.5),
    "dns_qps": ("DNS queries/s (dnsperf, dnsmasq, 8 flows)", "k q/s", 0.5),
}


def fmt(x, nd=2):
    return "—" if x is None else ("%.*f" % (nd, x))


def spread(xs):
    if not xs:
        return "—"
    if len(xs) == 1:
        return fmt(xs[0])
    return "%s (%s–%s)" % (fmt(median(xs)), fmt(min(xs)), fmt(max(xs)))


def report(b):
    res, lines = b.results, []
    add = lines.append
    add("| metric | unit | direct | lorelay | socat 8 KiB | socat 256 KiB | lorelay / direct "
        "| socat / direct | goal | met |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for m, (label, unit, goal) in GOALS.items():
        if m not in res:
            continue
        r = res[m]
        d, lo = median(r.get("direct")), median(r.get("lorelay"))
        s8, s256 = median(r.get("socat")), median(r.get("socat-256k"))
        ratio = lo / d if d and lo is not None else None
        sr = "/".join(fmt(x / d) for x in (s8, s256) if x is not None and d) or "—"
        met = ratio is not None and ratio >= goal
        summary[m] = {"ratio": ratio, "met": met}
        add("| %s | %s | %s | %s | %s | %s | **%s** | %s | ≥ %.1f × direct | %s |"
            % (label, unit, spread(r.get("direct")), spread(r.get("lorelay")), spread(r.get("socat")),
               spread(r.get("socat-256k")), fmt(ratio), sr, goal, "yes" if met else "**no**"))
    for m, label in (("udp_rate_loss", "UDP loss, to guest"), ("udp_rate_rev_loss", "UDP loss, from guest")):
        if m in res:
            d, lo = median(res[m].get("direct")), median(res[m].get("lorelay"))
            met = d is not None and lo is not None and lo <= max(d, 0.01)
            summary[m] = {"direct": d, "lorelay": lo, "met": met}
            add("| %s | %% lost | %s | %s | — | — | — | — | no loss above direct's | %s |"
                % (label, spread(res[m].get("direct")), spread(res[m].get("lorelay")),
                   "yes" if met else "**no**"))
    idle = getattr(b, "idle", None)
    if idle:
        per = idle["kib_per_conn"]
        met = per is not None and per <= 8 and idle["opened"] == idle["requested"]
        summary["idle"] = {"kib_per_conn": per, "met": met}
        add("| idle connections (%d relayed) | KiB RSS / conn | — | **%s** (lorelayd %s + agent %s) "
            "| — | — | — | — | ≤ 8 KiB, 5 000 conns | %s |"
            % (idle["opened"], fmt(per), fmt(idle["kib_per_conn_split"][0]) if per else "—",
               fmt(idle["kib_per_conn_split"][1]) if per else "—", "yes" if met else "**no**"))
    ic = getattr(b, "idle_cpu", None)
    if ic:
        met = ic["agent_pct"] <= 0.1
        summary["idle_cpu"] = {"agent_pct": ic["agent_pct"], "met": met}
        add("| agent idle CPU (%.0f s) | %% of a core | — | **%s** (lorelayd %s) | — | — | — | — "
            "| ≤ 0.1 %% | %s |" % (ic["seconds"], fmt(ic["agent_pct"], 3), fmt(ic["lorelayd_pct"], 3),
                                  "yes" if met else "**no**"))
    return "\n".join(lines), summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("LORELAY_BIN_DIR",
                                                        os.path.join(HERE, "..", "build", "linux", "bin")))
    ap.add_argument("--rounds", type=int, default=2, help="runs of each throughput/rate metric (median shown)")
    ap.add_argument("--iperf-secs", type=int, default=5)
    ap.add_argument("--ping-n", type=int, default=20000)
    ap.add_argument("--set-n", type=int, default=100000)
    ap.add_argument("--redis-timeout", type=int, default=120)
    ap.add_argument("--conn-secs", type=float, default=4.0)
    ap.add_argument("--conn-clients", type=int, default=2, help="concurrent connect-loop client processes")
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--idle-timeout", type=float, default=120.0)
    ap.add_argument("--cpu-secs", type=float, default=10.0)
    ap.add_argument("--only", default="", help="comma list of: cpu,throughput,redis,connrate,idle,udp")
    ap.add_argument("--udp-rate", default="300M", help="iperf3 -u offered load (-b) for the udp rows")
    ap.add_argument("--json", help="also write all samples and facts to this file")
    ap.add_argument("--max-seconds", type=int, default=1200, help="overall limit")
    ap.add_argument("--keep-tmp", action="store_true")
    a = ap.parse_args()
    a.bin_dir = os.path.abspath(a.bin_dir)
    if os.geteuid() != 0:
        sys.exit("bench: must run as root (it creates a network namespace)")
    for tool in ("ip", "ss", "iperf3", "redis-server", "redis-benchmark", "socat"):
        if shutil.which(tool) is None:
            sys.exit("bench: %s is not installed (run scripts/deps.sh bench)" % tool)
    for exe in ("lorelayd", "lorelay-init", "lorelay-agent"):
        if not os.access(os.path.join(a.bin_dir, exe), os.X_OK):
            sys.exit("bench: %s not built in %s (set LORELAY_BIN_DIR or --bin-dir)" % (exe, a.bin_dir))
    if not 1 <= a.rounds <= 10 or not 1 <= a.idle_conns <= 9000:
        sys.exit("bench: --rounds must be 1..10 and --idle-conns 1..9000")

    def on_signal(signum, _frame):
        raise SystemExit("bench: stopped by signal %d" % signum)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    signal.alarm(a.max_seconds)

    b = Bench(a)
    try:
        b.run()
    finally:
        signal.alarm(0)
        b.cleanup()
    table, summary = report(b)
    f = b.facts
    print()
    print("Machine: %s, %d MiB, Linux %s, %s" % (f["cpu"], f["memory_mib"], f["kernel"], f["os"]))
    print("Versions: %s; %s; %s; %s; python %s" % (f["lorelay"], f["iperf3"], f["redis"], f["socat"],
                                                    f["python"]))
    print("Load average at start %s, at end %s; rounds per metric: %d (median, range in brackets)"
          % (" ".join(f["loadavg_start"]), " ".join(f.get("loadavg_end", ["?"])), a.rounds))
    print()
    print(table)
    print()
    for k, v in b.extra.items():
        print("- %s: %s" % (k, v))
    if getattr(b, "idle", None):
        print("- idle detail: %s" % json.dumps(b.idle))
    if getattr(b, "idle_cpu", None):
        print("- idle CPU detail: %s" % json.dumps({k: round(v, 4) for k, v in b.idle_cpu.items()}))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"facts": f, "samples": b.results, "extra": b.extra, "summary": summary,
                       "idle": getattr(b, "idle", None), "idle_cpu": getattr(b, "idle_cpu", None),
                       "args": vars(a)}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
