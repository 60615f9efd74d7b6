#!/usr/bin/env python3
"""End-to-end test of lorelayd.exe under Wine against a Linux lorelay-agent.

The guest is a network namespace this test creates, joined to the host by a
veth pair with a /30 the test assigns itself; the agent serves tcp: on the
guest end (Wine has no AF_HYPERV, so tcp: with a token stands in for it).
Real clients only: python's http.server in the namespace on 0.0.0.0 and on
[::] (dual-stack), fetched with curl on the host at 127.0.0.1 and [::1]; and
(console mode) a guest UDP echo server forwarded through lorelayd.exe's UDP
stand-in.

  --mode console  lorelayd.exe started by hand (console mode), also checks
                  lorelayctl.exe over the named pipe (status, and watch --json
                  seeing a port added with its owner and one removed; a
                  stalled watcher that is told what it dropped while
                  forwarding goes on) and the --log-file sink.
  --mode service  the zip is unpacked, install.cmd registers and starts the
                  service in a Wine prefix kept up by `wineserver -p`;
                  `sc.exe query` must say RUNNING, forwarding must work
                  through the service, uninstall.cmd must remove it; a
                  service whose ProgramData\\lorelay others may write must
                  refuse to start and say why; SERVICE_CONTROL_PARAMCHANGE
                  (`sc.exe control lorelayd paramchange`; svc_control.exe
                  here, as Wine's sc.exe has no "control") must make the
                  running service apply a changed lorelay.ini, and keep
                  the running configuration when the file is bad.

Needs root (netns), Wine, curl and the Linux agent: without them it exits 77
(skip), except in CI (tests/lrci.py), where a missing prerequisite is a
failure. So is a host without IPv6 loopback: the [::1] checks cannot run, so
the test ends with a skip outside CI (after every other check passed) and
fails in CI.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
import lrci  # noqa: E402

# Checks that could not run on this host; reported (skip, or failure in CI)
# once everything else has passed.
NOT_RUN = []


def log(msg):
    print(f"[e2e_wine] {msg}", flush=True)


def skip(why):
    lrci.exit_skip_or_fail(why, name="e2e_wine", stream=sys.stdout)


def run(cmd, check=True, **kw):
    # Output goes through temporary files, not pipes: Wine commands may leave
    # a wineserver or services.exe behind holding inherited pipe ends, and
    # waiting for EOF on a pipe would then never end.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.run(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, text=True, **kw)
        out.seek(0)
        err.seek(0)
        r = subprocess.CompletedProcess(cmd, p.returncode, out.read(), err.read())
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def free_host_port():
    """A port free on the host's 127.0.0.1 and ::1 (the stand-ins bind both)."""
    for _ in range(200):
        p = random.randint(20000, 45000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", p))
            if socket.has_ipv6:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.bind(("::1", p))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port")


class Guest:
    """A netns + veth pair with test-assigned addresses, an agent and HTTP servers."""

    def __init__(self, agent, workdir):
        self.agent = agent
        self.workdir = workdir
        tag = f"{os.getpid() % 100000}"
        self.ns = f"lrwine{tag}"
        self.veth_host = f"lrwh{tag}"
        self.veth_guest = f"lrwg{tag}"
        n = os.getpid() % 250 + 1
        self.host_ip = f"10.231.{n}.1"
        self.guest_ip = f"10.231.{n}.2"
        self.agent_port = 50505
        self.procs = []

    def up(self):
        run(["ip", "netns", "add", self.ns])
        run(["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_guest])
        run(["ip", "link", "set", self.veth_guest, "netns", self.ns])
        run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.veth_host])
        run(["ip", "link", "set", self.veth_host, "up"])
        self.nsexec(["ip", "addr", "add", f"{self.guest_ip}/30", "dev", self.veth_guest])
        self.nsexec(["ip", "link", "set", self.veth_guest, "up"])
        self.nsexec(["ip", "link", "set", "lo", "up"])

    def nsexec(self, cmd):
        return run(["ip", "netns", "exec", self.ns] + cmd)

    def spawn(self, cmd, name):
        logf = open(os.path.join(self.workdir, f"{name}.log"), "w")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + cmd, stdout=logf,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((p, name))
        return p

    def start_agent(self, token_file):
        self.spawn([self.agent, "--listen", f"tcp:{self.guest_ip}:{self.agent_port}",
                    "--token-file", token_file, "--name", "wine-e2e", "--log-level", "debug"],
                   "agent")

    def start_http(self, port, bind, docroot, name):
        self.spawn([sys.executable, "-m", "http.server", str(port), "--bind", bind,
                    "--directory", docroot], name)

    def down(self):
        for p, _ in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p, _ in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        run(["ip", "link", "del", self.veth_host], check=False)
        run(["ip", "netns", "del", self.ns], check=False)

    def dump_logs(self):
        for _, name in self.procs:
            path = os.path.join(self.workdir, f"{name}.log")
            if os.path.exists(path):
                log(f"--- {name}.log ---\n{open(path).read()[-3000:]}")


class Wine:
    def __init__(self, wine_run, prefix):
        self.wine_run = wine_run
        self.prefix = prefix
        self.env = dict(os.environ, WINEPREFIX=prefix, WINEDEBUG="-all",
                        WINEDLLOVERRIDES="mscoree,mshtml=")

    def ensure_prefix(self):
        # wine-run.sh creates the prefix once, under a lock, then runs the program.
        t = time.time()
        run([self.wine_run, self.prefix, "cmd", "/c", "exit", "0"], env=self.env, timeout=600)
        # Persistent server from here on: a Wine service lives only as long
        # as its wineserver, which otherwise exits when the last client does.
        self.server_persistent()
        log(f"Wine prefix ready in {time.time() - t:.1f}s: {self.prefix}")

    def cmd(self, args, check=True, timeout=120):
        return run(["wine"] + args, check=check, env=self.env, timeout=timeout)

    def popen(self, args, logpath):
        logf = open(logpath, "w")
        return subprocess.Popen(["wine"] + args, stdout=logf, stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True)

    def server_persistent(self):
        # -p only starts a server when none runs: wait for the short-lived
        # one left by the last command to go first.
        run(["wineserver", "-w"], check=False, env=self.env, timeout=60)
        run(["wineserver", "-p"], env=self.env)

    def kill_server(self):
        run(["wineserver", "-k"], check=False, env=self.env)
        run(["wineserver", "-w"], check=False, env=self.env, timeout=30)

    def drive_c(self, *parts):
        return os.path.join(self.prefix, "drive_c", *parts)


def winpath(p):
    """Wine maps the Unix root to Z:."""
    return "Z:" + os.path.abspath(p).replace("/", "\\")


def curl(url, timeout=3):
    r = subprocess.run(["curl", "-sS", "-g", "--max-time", str(timeout), url],
                       capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def wait_fetch(url, want, deadline_s=60):
    t0 = time.time()
    last = None
    while time.time() - t0 < deadline_s:
        rc, out, err = curl(url)
        if rc == 0 and out == want:
            log(f"OK {url} after {time.time() - t0:.2f}s")
            return
        last = (rc, out[:200], err.strip()[:200])
        time.sleep(0.25)
    raise AssertionError(f"{url}: never got the expected body; last curl: {last}")


def expect_closed(port, deadline_s=20):
    """The stand-in on 127.0.0.1:port is gone: a connect is refused (a
    stand-in still listening would accept, then reset)."""
    t0 = time.time()
    while time.time() - t0 < deadline_s:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", port))
            except ConnectionRefusedError:
                log(f"OK 127.0.0.1:{port} closed after {time.time() - t0:.2f}s")
                return
            except OSError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"127.0.0.1:{port} still listening")


def check_forwarding(p4, p46, body4, body46):
    wait_fetch(f"http://127.0.0.1:{p4}/index.txt", body4)
    wait_fetch(f"http://127.0.0.1:{p46}/index.txt", body46)
    if os.path.exists("/proc/net/if_inet6"):
        wait_fetch(f"http://[::1]:{p46}/index.txt", body46)
        # 0.0.0.0 in the guest is IPv4 only: no [::1] stand-in for it.
        rc, _, _ = curl(f"http://[::1]:{p4}/index.txt", timeout=2)
        if rc == 0:
            raise AssertionError(f"[::1]:{p4} is served, but the guest listens on 0.0.0.0 only")
    else:
        if lrci.in_ci():
            raise AssertionError("host has no IPv6 (/proc/net/if_inet6 missing): the [::1] "
                                 "checks cannot run, and CI is set")
        log("host has no IPv6: [::1] checks not run")
        NOT_RUN.append("[::1] forwarding (host has no IPv6)")


def start_watch(wine, lorelayctl, pipe, work):
    """lorelayctl.exe watch --json over the named pipe; returns (process,
    output path) once it says it is subscribed."""
    out = os.path.join(work, "watch.log")
    proc = wine.popen([lorelayctl, "--socket", pipe, "watch", "--json"], out)
    t0 = time.time()
    while "watching lorelayd" not in open(out).read():
        if proc.poll() is not None or time.time() - t0 > 60:
            raise AssertionError(f"lorelayctl.exe watch did not subscribe: {open(out).read()}")
        time.sleep(0.2)
    log(f"OK lorelayctl.exe watch subscribed after {time.time() - t0:.2f}s")
    return proc, out


def wait_watch_event(out, event, guest_port, deadline_s=20):
    """The first JSON line of the watch with this event for this guest port."""
    t0 = time.time()
    while time.time() - t0 < deadline_s:
        for line in open(out).read().splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            ev = json.loads(line)
            if ev.get("event") == event and ev.get("port", {}).get("guest") == guest_port:
                log(f"OK watch: {event} {guest_port} after {time.time() - t0:.2f}s")
                return ev
        time.sleep(0.2)
    raise AssertionError(f"watch never showed {event} {guest_port}: {open(out).read()[-2000:]}")


CHURN = """
import socket, sys, time
port, n, pause = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    time.sleep(pause)
    s.close()
    time.sleep(pause)
print("done", flush=True)
"""


CHURN_CYCLES = 1500


def check_stalled_watcher(wine, lorelayctl, pipe, guest, work, p46, body46):
    """A watcher whose output nobody reads (lorelayctl.exe blocked on its
    stdout, so it stops reading the named pipe) while a guest port opens
    and closes every 3 ms, CHURN_CYCLES times (far more events than the
    pipes and the 64 KiB queue hold): lorelayd.exe keeps forwarding another
    port throughout, and once the output is read the watcher says it
    dropped events. Each cycle binds and closes a stand-in; with libuv's
    default of 32 AcceptEx sockets made in advance per listener, that pace
    stalled forwarding under Wine for 5 s and more (stand-ins now post one
    accept at a time)."""
    proc = subprocess.Popen(["wine", lorelayctl, "--socket", pipe, "watch", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=wine.env,
                            start_new_session=True)
    time.sleep(3)  # subscribed (lorelayctl.exe starts in well under a second here)
    port = free_host_port()
    script = os.path.join(work, "churn.py")
    open(script, "w").write(CHURN)
    churn = guest.spawn([sys.executable, script, str(port), str(CHURN_CYCLES), "0.003"], "churn")
    t0 = time.time()
    while churn.poll() is None:
        if time.time() - t0 > 120:
            raise AssertionError("guest churn did not finish within 120 s")
        rc, out, _ = curl(f"http://127.0.0.1:{p46}/index.txt", timeout=5)
        if rc != 0 or out != body46:
            raise AssertionError(f"forwarding broken while a watcher stalls: rc={rc}")
        time.sleep(0.5)
    log(f"OK forwarding answered throughout {time.time() - t0:.1f}s of churn with a stalled watcher")
    # Now read what the watcher got: events, and a "dropped" line with its count.
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = bytearray()
    t1 = time.time()
    while time.time() - t1 < 60:
        if not sel.select(timeout=5):
            break
        b = os.read(proc.stdout.fileno(), 1 << 16)
        if not b:
            break
        buf += b
        if b'"event":"dropped"' in buf and time.time() - t1 > 3:
            break
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    lines = [json.loads(l) for l in buf.decode(errors="replace").splitlines()
             if l.strip().startswith("{")]
    dropped = sum(e.get("count", 0) for e in lines if e.get("event") == "dropped")
    got = sum(1 for e in lines if e.get("port", {}).get("guest") == f"0.0.0.0:{port}")
    log(f"stalled watcher over the named pipe: {got} events received, {dropped} dropped "
        f"({2 * CHURN_CYCLES} emitted if the agent saw every cycle)")
    if not dropped:
        raise AssertionError(f"a stalled watcher was never told it dropped events ({got} received)")
GUESTSRV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e",
                        "guestsrv.py")


def udp_echo(port, payload, timeout=1.0, fam=socket.AF_INET, host="127.0.0.1"):
    """One datagram to host:port and its echo, or None."""
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(payload, (host, port))
            return s.recvfrom(70000)[0]
        except OSError:
            return None


def check_udp(guest, wine, lorelayctl, pipe, pu):
    """A guest UDP server through lorelayd.exe: the UDP stand-in (the win32
    layer's SO_EXCLUSIVEADDRUSE UDP bind), datagrams of 1 to 65 507 bytes
    whole, several client flows, and the stand-in gone with the server."""
    t0 = time.time()
    while udp_echo(pu, b"ping") != b"ping":
        if time.time() - t0 > 60:
            raise AssertionError(f"no UDP echo through lorelayd.exe on 127.0.0.1:{pu}")
        time.sleep(0.2)
    for n in (1, 2, 100, 1400, 1473, 9000, 32768, 65507):
        payload = bytes(random.getrandbits(8) for _ in range(min(n, 64))) * (n // 64 + 1)
        payload = payload[:n]
        got = udp_echo(pu, payload, timeout=3.0)
        if got != payload:
            raise AssertionError(f"UDP datagram of {n} bytes came back as "
                                 f"{None if got is None else len(got)} bytes")
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
    try:
        for i, s in enumerate(socks):
            s.sendto(b"flow-%d" % i, ("127.0.0.1", pu))
        for i, s in enumerate(socks):
            s.settimeout(3.0)
            if s.recvfrom(100)[0] != b"flow-%d" % i:
                raise AssertionError(f"UDP flow {i} got another flow's reply")
    finally:
        for s in socks:
            s.close()
    log(f"OK UDP through lorelayd.exe: 127.0.0.1:{pu}, sizes 1..65507, 20 flows")
    if os.path.exists(lorelayctl):
        r = wine.cmd([lorelayctl, "--socket", pipe, "status", "--json"], check=False)
        doc = r.stdout.replace(" ", "")
        if f'"proto":"udp","guest":"0.0.0.0:{pu}"' not in doc:
            raise AssertionError(f"lorelayctl.exe status does not show UDP 0.0.0.0:{pu}: {r.stdout}")
    for p, name in guest.procs:
        if name == "udpecho":
            os.killpg(p.pid, signal.SIGTERM)
    t0 = time.time()
    while udp_echo(pu, b"gone?", timeout=0.3) is not None:
        if time.time() - t0 > 20:
            raise AssertionError(f"UDP stand-in 127.0.0.1:{pu} still echoes after the server went")
    log(f"OK UDP stand-in 127.0.0.1:{pu} gone with the guest socket")


def check_wsl_lookup_retries(wine, lorelayd, lorelayctl, work):
    """--vm-id wsl with no WSL VM (Wine has no HCS at all): lorelayd must stay
    up, say why in status, and keep looking, as a service started at boot
    before WSL must."""
    if not os.path.exists(lorelayctl):
        raise AssertionError("lorelayctl.exe not built")
    pipe = f"\\\\.\\pipe\\lorelay-e2e-wsl-{os.getpid()}"
    proc = wine.popen([lorelayd, "--vm-id", "wsl", "--socket", pipe], os.path.join(work, "lorelayd-wsl.log"))
    try:
        deadline = time.monotonic() + 60
        out = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"lorelayd --vm-id wsl exited ({proc.returncode}) instead of retrying")
            r = wine.cmd([lorelayctl, "--socket", pipe, "status", "--json"], check=False, timeout=30)
            out = r.stdout
            if r.returncode == 0 and '"state":"connecting"' in out and "WSL" in out:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"status never showed the WSL lookup failure: {out}")
        doc = json.loads(out)
        g = doc["guests"][0]
        if g["transport"] != "hvsock:wsl:50505" or "error" not in g:
            raise AssertionError(f"unexpected guest entry: {g}")
        log(f"--vm-id wsl without WSL keeps running: {g['error']}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def check_untrusted_data_dir(wine, exe, guest_addr, data, lorelayd):
    """A %ProgramData%\\lorelay that others may write is not used: the
    service stops at once with exit code 1, and its fallback log beside the
    exe says who may write. Under Wine a directory's DACL is made up from its
    Unix mode, so mode 0777 is an Everyone-may-write ACE; its owner is always
    the Wine user, so the owner half of the check cannot be shown here."""
    fallback = os.path.join(os.path.dirname(lorelayd), "lorelayd.log")
    if os.path.exists(fallback):
        os.remove(fallback)
    mode = os.stat(data).st_mode & 0o7777
    os.chmod(data, 0o777)
    try:
        wine.cmd(["sc.exe", "delete", "lorelayd-open"], check=False)
        wine.cmd(["sc.exe", "create", "lorelayd-open", "binPath=",
                  f'"{exe}" --guest {guest_addr} --token-file C:\\ProgramData\\lorelay\\token'])
        wine.cmd(["sc.exe", "start", "lorelayd-open"], check=False)
        t0 = time.time()
        while True:
            q = wine.cmd(["sc.exe", "query", "lorelayd-open"], check=False)
            if "STOPPED" in q.stdout:
                break
            if time.time() - t0 > 30:
                raise AssertionError(f"service on a world-writable data dir never stopped:\n{q.stdout}")
            time.sleep(0.5)
        wine.cmd(["sc.exe", "delete", "lorelayd-open"], check=False)
        if not re.search(r"SERVICE_EXIT_CODE\s*:\s*1\b", q.stdout):
            raise AssertionError(f"world-writable data dir: not refused with exit code 1:\n{q.stdout}")
        text = open(fallback).read() if os.path.exists(fallback) else ""
        if "not starting" not in text or "S-1-1-0" not in text:
            raise AssertionError(f"fallback log {fallback} does not say why: {text[-1500:]}")
        log("OK world-writable ProgramData\\lorelay refused: " +
            next(l for l in text.splitlines() if "not starting" in l)[:300])
    finally:
        os.chmod(data, mode)
        if os.path.exists(fallback):
            os.remove(fallback)


def check_paramchange(wine, svc_control, data, p4, pign, body4):
    """The service re-reads lorelay.ini on SERVICE_CONTROL_PARAMCHANGE:
    ports follow (p4 ignored now, pign forwarded); a bad file then changes
    nothing and the log names its line."""
    if not svc_control or not os.path.exists(svc_control):
        raise AssertionError(f"svc_control.exe not built: {svc_control}")
    ini = os.path.join(data, "lorelay.ini")
    svc_log = os.path.join(data, "lorelayd.log")

    def paramchange():
        r = wine.cmd([svc_control, "lorelayd", "paramchange"], check=False)
        log(f"svc_control lorelayd paramchange: rc={r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
        if r.returncode != 0:
            raise AssertionError("SERVICE_CONTROL_PARAMCHANGE not accepted by the service")

    with open(ini, "w") as f:
        f.write(f"[lorelay]\r\nignorePorts={p4}\r\nlogLevel=debug\r\n")
    paramchange()
    expect_closed(p4)
    wait_fetch(f"http://127.0.0.1:{pign}/index.txt", body4, deadline_s=20)
    log(f"OK paramchange: port {p4} now ignored, {pign} forwarded")

    with open(ini, "w") as f:
        f.write(f"[lorelay]\r\nignorePorts={pign}\r\nipv6=flase\r\n")
    paramchange()
    t0 = time.time()
    while True:
        text = open(svc_log).read() if os.path.exists(svc_log) else ""
        if "was not applied" in text:
            break
        if time.time() - t0 > 20:
            raise AssertionError(f"no 'was not applied' line after a bad lorelay.ini: {text[-1500:]}")
        time.sleep(0.3)
    if "lorelay.ini:3: ipv6 = 'flase'" not in text:
        raise AssertionError(f"the log does not name line 3 of the bad file: {text[-1500:]}")
    wait_fetch(f"http://127.0.0.1:{pign}/index.txt", body4, deadline_s=5)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        if s.connect_ex(("127.0.0.1", p4)) == 0:
            raise AssertionError(f"port {p4} forwarded again after a bad file")
    log("OK bad lorelay.ini: the running configuration stays, the log names line 3")
    # The rest of the test expects pign ignored again.
    with open(ini, "w") as f:
        f.write(f"[lorelay]\r\nignorePorts={pign}\r\nlogLevel=debug\r\n")
    paramchange()
    expect_closed(pign)
    wait_fetch(f"http://127.0.0.1:{p4}/index.txt", body4, deadline_s=20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["console", "service"], required=True)
    ap.add_argument("--wine-run", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--agent", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--zip")
    ap.add_argument("--svc-control")
    a = ap.parse_args()

    if os.geteuid() != 0:
        skip("needs root for ip netns")
    for tool in ("wine", "wineserver", "ip", "curl"):
        if shutil.which(tool) is None:
            skip(f"{tool} not found")
    if not os.access(a.agent, os.X_OK):
        skip(f"Linux agent not built: {a.agent} (build the linux preset, or set LORELAY_LINUX_BIN_DIR)")
    lorelayd = os.path.join(a.bin_dir, "lorelayd.exe")
    lorelayctl = os.path.join(a.bin_dir, "lorelayctl.exe")
    if a.mode == "service" and (not a.zip or not os.path.exists(a.zip)):
        raise SystemExit(f"zip not found: {a.zip} (run cpack / the win32_package test)")

    work = tempfile.mkdtemp(prefix="lorelay-wine-e2e-")
    guest = Guest(a.agent, work)
    wine = Wine(a.wine_run, a.prefix)
    ok = False
    lorelayd_proc = None
    try:
        wine.ensure_prefix()
        guest.up()
        token = os.path.join(work, "token")
        with open(token, "w") as f:
            f.write("%032x\n" % random.getrandbits(128))
        os.chmod(token, 0o600)  # the agent refuses a key others may read
        docroot4 = os.path.join(work, "www4")
        docroot46 = os.path.join(work, "www46")
        os.makedirs(docroot4)
        os.makedirs(docroot46)
        body4 = f"served on 0.0.0.0 in {guest.ns}\n"
        body46 = f"served on dual-stack [::] in {guest.ns}\n"
        open(os.path.join(docroot4, "index.txt"), "w").write(body4)
        open(os.path.join(docroot46, "index.txt"), "w").write(body46)
        p4, p46, pign = free_host_port(), free_host_port(), free_host_port()
        while len({p4, p46, pign}) < 3:
            p46, pign = free_host_port(), free_host_port()
        guest.start_agent(token)
        pu = free_host_port()
        guest.spawn([sys.executable, "-u", GUESTSRV, "udpecho", "0.0.0.0", str(pu), "stdin=0"],
                    "udpecho")
        guest.start_http(p4, "0.0.0.0", docroot4, "http4")
        guest.start_http(p46, "::", docroot46, "http46")
        if a.mode == "service":
            guest.start_http(pign, "0.0.0.0", docroot4, "http-ignored")
        guest_addr = f"tcp:{guest.guest_ip}:{guest.agent_port}"

        if a.mode == "console":
            pipe = f"\\\\.\\pipe\\lorelay-e2e-{os.getpid()}"
            logfile = os.path.join(work, "lorelayd-file.log")
            lorelayd_proc = wine.popen([lorelayd, "--guest", guest_addr, "--token-file", winpath(token),
                                        "--socket", pipe, "--log-level", "debug",
                                        "--log-file", winpath(logfile), "--name", "wine-e2e"],
                                       os.path.join(work, "lorelayd.log"))
            check_forwarding(p4, p46, body4, body46)
            # The key was proved both ways (BCrypt's HMAC against libcrypto's),
            # not merely configured.
            agent_log = open(os.path.join(work, "agent.log")).read()
            if "(key proved)" not in agent_log or "authentication failed" in agent_log:
                raise AssertionError(f"agent did not see lorelayd.exe prove the key:\n{agent_log[-2000:]}")
            # Status over the named pipe, with the Windows lorelayctl when built.
            if os.path.exists(lorelayctl):
                r = wine.cmd([lorelayctl, "--socket", pipe, "status", "--json"], check=False)
                log(f"lorelayctl.exe status --json: rc={r.returncode} {r.stdout.strip()[:600]}")
                if r.returncode != 0 or f'"guest":"0.0.0.0:{p4}"' not in r.stdout.replace(" ", ""):
                    raise AssertionError(f"lorelayctl.exe status does not show 0.0.0.0:{p4}: {r.stdout}{r.stderr}")
            text = open(logfile).read() if os.path.exists(logfile) else ""
            if "running in the console" not in text:
                raise AssertionError(f"--log-file {logfile} lacks the start-up line: {text[-1000:]}")
            # Watch over the named pipe: a new guest server is added (with
            # its owner), a stopped one removed.
            watch = None
            if os.path.exists(lorelayctl):
                watch, watch_out = start_watch(wine, lorelayctl, pipe, work)
                pnew = free_host_port()
                while pnew in (p4, p46, pign):
                    pnew = free_host_port()
                guest.start_http(pnew, "0.0.0.0", docroot4, "http-watch")
                ev = wait_watch_event(watch_out, "port-added", f"0.0.0.0:{pnew}")
                proc = ev["port"].get("process") or {}
                srv = [p for p, name in guest.procs if name == "http-watch"][0]
                if "http.server" not in proc.get("command", "") or not proc.get("pid"):
                    raise AssertionError(f"port-added lacks the owner (ip netns exec pid {srv.pid}): {ev}")
                if ev.get("guest") != "wine-e2e" or not re.match(r"^\d{4}-\d\d-\d\dT", ev.get("time", "")):
                    raise AssertionError(f"watch event lacks guest/time: {ev}")
            check_udp(guest, wine, lorelayctl, pipe, pu)
            # Guest listener gone -> stand-in gone.
            for p, name in guest.procs:
                if name == "http4":
                    os.killpg(p.pid, signal.SIGTERM)
            expect_closed(p4)
            if os.path.exists(lorelayctl):
                check_stalled_watcher(wine, lorelayctl, pipe, guest, work, p46, body46)
            if watch is not None:
                wait_watch_event(watch_out, "port-removed", f"0.0.0.0:{p4}")
                if watch.poll() is not None:
                    raise AssertionError("lorelayctl.exe watch ended by itself")
                os.killpg(watch.pid, signal.SIGTERM)
                watch.wait(timeout=30)
            wait_fetch(f"http://127.0.0.1:{p46}/index.txt", body46)
            check_wsl_lookup_retries(wine, lorelayd, lorelayctl, work)
        else:
            unpack = wine.drive_c("lorelay-e2e-unpack")
            shutil.rmtree(unpack, ignore_errors=True)
            with zipfile.ZipFile(a.zip) as z:
                z.extractall(unpack)
            tops = os.listdir(unpack)
            if len(tops) != 1:
                raise AssertionError(f"zip should have one top directory, has {tops}")
            top = os.path.join(unpack, tops[0])
            for f in ("lorelayd.exe", "install.cmd", "uninstall.cmd", "lorelay.ini", "README.txt"):
                if not os.path.exists(os.path.join(top, f)):
                    raise AssertionError(f"zip lacks {f}")
            data = wine.drive_c("ProgramData", "lorelay")
            os.makedirs(data, exist_ok=True)
            shutil.copy(token, os.path.join(data, "token"))
            # install.cmd keeps an existing lorelay.ini: this one proves the
            # service reads the config from ProgramData (pign is ignored).
            if os.path.exists(os.path.join(data, "lorelayd.log")):
                os.remove(os.path.join(data, "lorelayd.log"))
            with open(os.path.join(data, "lorelay.ini"), "w") as f:
                f.write(f"[lorelay]\r\nignorePorts={pign}\r\nlogLevel=debug\r\n")
            wine.cmd(["sc.exe", "stop", "lorelayd"], check=False)
            wine.cmd(["sc.exe", "delete", "lorelayd"], check=False)

            # A service that cannot start says so: STOPPED with its exit code.
            exe = winpath(lorelayd)
            wine.cmd(["sc.exe", "delete", "lorelayd-bad"], check=False)
            wine.cmd(["sc.exe", "create", "lorelayd-bad", "binPath=",
                      f'"{exe}" --guest {guest_addr} --token-file C:\\no\\such\\token'])
            wine.cmd(["sc.exe", "start", "lorelayd-bad"], check=False)
            t0 = time.time()
            while True:
                q = wine.cmd(["sc.exe", "query", "lorelayd-bad"], check=False)
                if "STOPPED" in q.stdout:
                    break
                if time.time() - t0 > 30:
                    raise AssertionError(f"failing service never reached STOPPED:\n{q.stdout}")
                time.sleep(0.5)
            wine.cmd(["sc.exe", "delete", "lorelayd-bad"], check=False)
            log(f"service with a missing token file:\n{q.stdout.strip()}")
            if "1066" not in q.stdout or not re.search(r"SERVICE_EXIT_CODE\s*:\s*1\b", q.stdout):
                raise AssertionError("failed start not reported as ERROR_SERVICE_SPECIFIC_ERROR (1066) / exit code 1")
            check_untrusted_data_dir(wine, exe, guest_addr, data, lorelayd)
            install = "C:\\lorelay-e2e-unpack\\" + tops[0] + "\\install.cmd"
            r = wine.cmd(["cmd", "/c", install, "--guest", guest_addr, "--token-file",
                          "C:\\ProgramData\\lorelay\\token", "--log-level", "debug", "--name",
                          "wine-e2e"], check=False, timeout=180)
            log(f"install.cmd rc={r.returncode}\n{r.stdout}{r.stderr}")
            if r.returncode != 0:
                raise AssertionError("install.cmd failed")
            if not os.path.exists(os.path.join(data, "lorelay.ini")):
                raise AssertionError("install.cmd did not put lorelay.ini in ProgramData")
            if not os.path.exists(wine.drive_c("Program Files", "lorelay", "lorelayd.exe")):
                raise AssertionError("install.cmd did not copy lorelayd.exe to Program Files")
            t0 = time.time()
            while True:
                q = wine.cmd(["sc.exe", "query", "lorelayd"], check=False)
                if "RUNNING" in q.stdout:
                    break
                if time.time() - t0 > 30:
                    raise AssertionError(f"sc.exe query lorelayd never shows RUNNING:\n{q.stdout}{q.stderr}")
                time.sleep(0.5)
            log(f"sc.exe query lorelayd:\n{q.stdout.strip()}")
            qc = wine.cmd(["sc.exe", "qc", "lorelayd"], check=False)
            log(f"sc.exe qc lorelayd:\n{qc.stdout.strip()}")
            check_forwarding(p4, p46, body4, body46)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                if s.connect_ex(("127.0.0.1", pign)) == 0:
                    raise AssertionError(f"port {pign} is forwarded although lorelay.ini ignores it")
            log(f"OK port {pign} not forwarded (ignorePorts in ProgramData\\lorelay\\lorelay.ini)")
            check_paramchange(wine, a.svc_control, data, p4, pign, body4)
            svc_log = os.path.join(data, "lorelayd.log")
            text = open(svc_log).read() if os.path.exists(svc_log) else ""
            if "running as a service" not in text:
                raise AssertionError(f"service log {svc_log} lacks 'running as a service': {text[-1500:]}")
            ctl = wine.drive_c("Program Files", "lorelay", "lorelayctl.exe")
            if os.path.exists(ctl):
                r = wine.cmd([ctl, "status"], check=False)
                log(f"installed lorelayctl.exe status (default pipe): rc={r.returncode}\n{r.stdout.strip()[:800]}")
                if r.returncode != 0:
                    raise AssertionError(f"lorelayctl.exe status failed: {r.stdout}{r.stderr}")
                if not re.search(rf"0\.0\.0\.0:{pign}\s.*ignored", r.stdout):
                    raise AssertionError(f"status does not show port {pign} as ignored")
            uninstall = "C:\\lorelay-e2e-unpack\\" + tops[0] + "\\uninstall.cmd"
            r = wine.cmd(["cmd", "/c", uninstall], check=False, timeout=120)
            log(f"uninstall.cmd rc={r.returncode}\n{r.stdout}{r.stderr}")
            if r.returncode != 0:
                raise AssertionError("uninstall.cmd failed")
            q = wine.cmd(["sc.exe", "query", "lorelayd"], check=False)
            if q.returncode == 0:
                raise AssertionError(f"service still registered after uninstall.cmd:\n{q.stdout}")
            log(f"sc.exe query after uninstall: rc={q.returncode} {q.stdout.strip()}")
            if os.path.exists(wine.drive_c("Program Files", "lorelay", "lorelayd.exe")):
                raise AssertionError("uninstall.cmd left lorelayd.exe behind")
            if "stopped" not in open(svc_log).read():
                raise AssertionError("service log has no clean 'stopped' line")
            expect_closed(p4)
            expect_closed(p46)
        ok = True
    finally:
        if lorelayd_proc is not None:
            try:
                os.killpg(lorelayd_proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        wine.kill_server()
        if lorelayd_proc is not None:
            try:
                lorelayd_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(lorelayd_proc.pid, signal.SIGKILL)
        if not ok:
            guest.dump_logs()
            p = os.path.join(work, "lorelayd.log")
            if os.path.exists(p):
                log(f"--- lorelayd.exe output ---\n{open(p).read()[-4000:]}")
            svc = wine.drive_c("ProgramData", "lorelay", "lorelayd.log")
            if os.path.exists(svc):
                log(f"--- service log ---\n{open(svc).read()[-4000:]}")
        guest.down()
        shutil.rmtree(work, ignore_errors=True)
    if NOT_RUN:
        skip(f"{a.mode}: every other check passed, but these did not run: " + "; ".join(NOT_RUN))
    log(f"PASS ({a.mode})")


if __name__ == "__main__":
    main()
