"""End-to-end harness: one lorelayd and one fresh network namespace per test.

A guest here is a network namespace: its own loopback, exactly the isolation
a WSL2 VM has. Each test gets a namespace name nobody else uses
(lrt-<pid>-<n>), its own temporary directory and status socket, and host
ports picked at random and bind-tested, so two tests can run side by side.
Everything a test starts is recorded and torn down in cleanup(), whatever
happened: lorelayd first (it should stop its init and agent), then any
straggler still inside the namespace, then the namespace itself.

Only loopback addresses on the host and addresses inside namespaces the test
created ever receive traffic. Every wait has a deadline; every socket has a
timeout. Stdlib only, so the suite runs on a bare Debian with python3.
"""

import errno
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: lrci, lrpeer

import lrci  # noqa: E402
from lrci import in_ci, skip_or_fail  # noqa: E402,F401  (re-exported for the tests)

GUESTSRV = os.path.join(HERE, "guestsrv.py")
PYTHON = sys.executable or "python3"
SKIP = lrci.SKIP

_ns_counter = 0


def bin_dir():
    d = os.environ.get("LORELAY_BIN_DIR")
    if not d:
        d = os.path.join(HERE, "..", "..", "build", "linux", "bin")
    return os.path.abspath(d)


def binary(name):
    return os.path.join(bin_dir(), name)


def prerequisites():
    """Returns a list of reasons the suite cannot run here (empty: fine)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not root (network namespaces need CAP_SYS_ADMIN)")
    if shutil.which("ip") is None:
        missing.append("iproute2's `ip` is not installed")
    else:
        r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        if r.returncode != 0:
            missing.append("`ip netns list` failed: " + r.stderr.strip())
    if shutil.which("curl") is None:
        missing.append("curl is not installed")
    if shutil.which("ss") is None:
        missing.append("ss (iproute2) is not installed")
    return missing


def missing_binaries():
    return [n for n in ("lorelayd", "lorelayctl", "lorelay-init", "lorelay-agent")
            if not os.access(binary(n), os.X_OK)]


def check_environment_or_exit():
    """Skip (77) when the machine cannot run namespaces, unless in CI:
    then a silent skip would hide a broken CI image, so fail loudly."""
    reasons = prerequisites()
    if reasons:
        lrci.exit_skip_or_fail("e2e prerequisites missing: " + "; ".join(reasons))
    bins = missing_binaries()
    if bins:
        print("FATAL: binaries not built in %s: %s (set LORELAY_BIN_DIR)"
              % (bin_dir(), ", ".join(bins)), file=sys.stderr)
        sys.exit(1)


# ---------------------------------------------------------------- host ports

def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port):
    """True if 127.0.0.1:port and [::1]:port can both be bound right now."""
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((addr, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_port(exclude=()):
    """A random port below the ephemeral range (so no client socket grabs it
    between our check and the test's use) that is free on host loopback."""
    hi = min(_ephemeral_low() - 1, 32000)
    for _ in range(500):
        p = random.randint(12000, hi)
        if p not in exclude and port_is_free(p):
            return p
    raise RuntimeError("no free host port found")


def free_ports(n):
    ports = []
    while len(ports) < n:
        ports.append(free_port(exclude=ports))
    return ports


# ---------------------------------------------------------------- clients

def fam_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def hostport(host, port):
    return ("[%s]:%d" % (host, port)) if ":" in host else ("%s:%d" % (host, port))


def try_connect(host, port, timeout=1.0):
    """Returns None if a TCP connection was established (and closed), else
    the OSError (ConnectionRefusedError when nothing listens)."""
    s = socket.socket(fam_of(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        return None
    except OSError as e:
        return e
    finally:
        s.close()


def finish(s, send=b""):
    """On a connected socket: sends, half-closes, reads until EOF, closes.
    Returns the bytes read."""
    try:
        if send:
            s.sendall(send)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                return b"".join(chunks)
            chunks.append(b)
    finally:
        s.close()


def fetch(host, port, send=b"", timeout=5.0):
    """Connects, sends, half-closes, reads until EOF. Returns the bytes.
    Raises OSError (refused, reset, timeout)."""
    s = socket.socket(fam_of(host), socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        raise
    return finish(s, send)


def curl(url, timeout=5.0):
    """Fetches url with the real curl (proxies disabled). Returns
    (returncode, body bytes, stderr text)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    r = subprocess.run(["curl", "-sS", "-g", "--noproxy", "*", "--max-time", str(timeout), url],
                       capture_output=True, env=env, timeout=timeout + 5)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace").strip()


def wait_refused(host, port, timeout, interval=0.005):
    """Polls until connect() to host:port is refused. Returns seconds taken,
    or None if it was still accepting at the deadline."""
    t0 = time.monotonic()
    while True:
        e = try_connect(host, port, timeout=0.5)
        if isinstance(e, ConnectionRefusedError):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            return None
        time.sleep(interval)


def poll(fn, timeout, interval=0.01):
    """Calls fn until it returns a truthy value or the deadline passes.
    Returns (value, seconds) or (None, seconds)."""
    t0 = time.monotonic()
    while True:
        v = fn()
        el = time.monotonic() - t0
        if v:
            return v, el
        if el > timeout:
            return None, el
        time.sleep(interval)


# ---------------------------------------------------------------- processes

def relay_path_variant():
    """This run's relay-path variant (LORELAY_E2E_CONFIG_EXTRA, set by ctest),
    normalised for matching: "onehop=false,zerocopy=false"; "" by default."""
    return os.environ.get("LORELAY_E2E_CONFIG_EXTRA", "").replace(" ", "").lower()


def one_hop_expected():
    """False when this run's relay-path variant turned one hop off, so a
    --netns guest's connections go through the agent as a VM guest's do."""
    return "onehop=false" not in relay_path_variant()


def read_status(sock_path, timeout=2.0):
    """lorelayd's status JSON from its Unix-socket endpoint."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(b"status json\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    return json.loads(b"".join(chunks).decode())


class Proc:
    """A process we started, with its stdout+stderr in a file."""

    def __init__(self, argv, out_path, stdin=None, env=None):
        self.argv = argv
        self.out_path = out_path
        self._out = open(out_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  env=env, start_new_session=True)
        self.pid = self.p.pid

    def output(self):
        try:
            with open(self.out_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def events(self):
        """JSON lines printed by guestsrv.py."""
        evs = []
        for line in self.output().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    evs.append(json.loads(line))
                except ValueError:
                    pass
        return evs

    def wait_event(self, name, timeout=5.0, count=1):
        def find():
            evs = [e for e in self.events() if e.get("event") == name]
            if len(evs) >= count:
                return evs[count - 1]
            if self.p.poll() is not None:
                return {"event": "__exited__", "rc": self.p.returncode}
            return None
        ev, _ = poll(find, timeout)
        if ev is None:
            raise AssertionError("%s: no %r event within %.1fs; output:\n%s"
                                 % (self.argv, name, timeout, self.output()))
        if ev.get("event") == "__exited__":
            raise AssertionError("%s exited (rc %s) before %r; output:\n%s"
                                 % (self.argv, ev["rc"], name, self.output()))
        return ev

    def send(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        if self.p.stdin:
            try:
                self.p.stdin.close()
            except OSError:
                pass
        self._out.close()
        return self.p.returncode


# ---------------------------------------------------------------- lorelayd + netns

def merge_lorelay_keys(config, keys):
    """config with "key=value" lines in its [lorelay] section, replacing the
    same keys there (the file is strict: a key or a section twice is an
    error)."""
    names = {k.split("=", 1)[0].strip().lower() for k in keys if "=" in k}
    out, section, placed = [], None, False
    for line in config.splitlines():
        t = line.strip()
        if t.startswith("["):
            section = t.strip("[]").strip().lower()
            out.append(line)
            if section == "lorelay" and not placed:
                out.extend(keys)
                placed = True
            continue
        if section == "lorelay" and "=" in t and not t.startswith((";", "#")) \
                and t.split("=", 1)[0].strip().lower() in names:
            continue
        out.append(line)
    if not placed:
        out = ["[lorelay]"] + list(keys) + [""] + out
    return "\n".join(out) + "\n"


class Lorelay:
    """One lorelayd --netns NAME with everything it and the test started."""

    def __init__(self, config=None, tag="lrt"):
        global _ns_counter
        _ns_counter += 1
        self.netns = "%s-%d-%d" % (tag, os.getpid(), _ns_counter)
        self.tmpdir = tempfile.mkdtemp(prefix=self.netns + ".")
        self.sock = os.path.join(self.tmpdir, "lorelayd.sock")
        self.config_path = None
        # A ctest variant runs a scenario on another relay path (two hops,
        # zero copy from the first byte, copy only): its [lorelay] keys,
        # separated by commas, come after the scenario's own, so they win.
        extra = os.environ.get("LORELAY_E2E_CONFIG_EXTRA")
        if extra:
            config = merge_lorelay_keys(config or "", extra.split(","))
        if config is not None:
            self.config_path = os.path.join(self.tmpdir, "lorelay.ini")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.daemon = None
        self.daemon_runs = 0
        self.procs = []
        self.log_paths = []

    # -- lorelayd

    @property
    def agent_socket(self):
        return "/run/lorelay/netns-%s.sock" % self.netns

    def start(self, wait=True, timeout=10.0):
        self.daemon_runs += 1
        log = os.path.join(self.tmpdir, "lorelayd.%d.log" % self.daemon_runs)
        self.log_paths.append(log)
        argv = [binary("lorelayd"), "--netns", self.netns, "--socket", self.sock,
                "--log-level", "debug"]
        if self.config_path:
            argv += ["-c", self.config_path]
        self.daemon = Proc(argv, log)
        if wait:
            self.wait_connected(timeout)
        return self.daemon

    def stop_daemon(self, sig=signal.SIGTERM, timeout=5.0):
        """Stops lorelayd; returns its exit code (None if it had to be killed)."""
        d = self.daemon
        if d is None:
            return None
        killed = False
        if d.p.poll() is None:
            os.kill(d.pid, sig)
            try:
                d.p.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                os.kill(d.pid, signal.SIGKILL)
                d.p.wait(5)
        d.stop()
        self.daemon = None
        return None if killed else d.p.returncode

    def log(self):
        """All lorelayd (and agent, whose stderr it inherits) output so far."""
        out = []
        for p in self.log_paths:
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode(errors="replace"))
            except OSError:
                pass
        return "".join(out)

    # -- status

    def status(self, timeout=2.0):
        """The status document, straight from the endpoint (faster than
        spawning lorelayctl, so waits can poll every 10 ms)."""
        return read_status(self.sock, timeout)

    def ctl(self, *args, timeout=10.0):
        return subprocess.run([binary("lorelayctl"), "--socket", self.sock] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    def ctl_status(self):
        r = self.ctl("status", "--json")
        if r.returncode != 0:
            raise AssertionError("lorelayctl status --json failed (rc %d): %s"
                                 % (r.returncode, r.stderr.strip()))
        return json.loads(r.stdout)

    def guest(self, st=None, name=None):
        """The guest called name in the status document (default: the first)."""
        st = st if st is not None else self.status()
        gs = st.get("guests", [])
        if name is not None:
            gs = [g for g in gs if g.get("name") == name]
        return gs[0] if gs else None

    def ports(self, name=None):
        g = self.guest(name=name)
        return g.get("ports", []) if g else []

    def port(self, guest_addr, name=None):
        for p in self.ports(name):
            if p.get("guest") == guest_addr:
                return p
        return None

    def _status_or_none(self):
        try:
            return self.status(timeout=1.0)
        except (OSError, ValueError):
            return None

    def wait_connected(self, timeout=10.0):
        """Waits until lorelayctl reports the guest "connected"."""
        def ok():
            if self.daemon is not None and self.daemon.p.poll() is not None:
                raise AssertionError("lorelayd exited with %s during start-up; log:\n%s"
                                     % (self.daemon.p.returncode, self.log()))
            try:
                st = self.ctl_status()
            except (AssertionError, ValueError, subprocess.TimeoutExpired):
                return None
            g = self.guest(st)
            return g if g and g.get("state") == "connected" else None
        g, el = poll(ok, timeout, 0.01)
        if g is None:
            raise AssertionError("guest not connected within %.1fs; log:\n%s" % (timeout, self.log()))
        return el

    def wait_port(self, guest_addr, state="forwarding", timeout=3.0, pred=None, name=None):
        """Polls status every 10 ms until guest_addr of guest name (default:
        the first) has this state (and pred holds). Returns (port dict,
        seconds)."""
        def ok():
            st = self._status_or_none()
            if not st:
                return None
            g = self.guest(st, name)
            if not g or g.get("state") != "connected":
                return None
            for p in g.get("ports", []):
                if p.get("guest") == guest_addr and p.get("state") == state:
                    if pred is None or pred(p):
                        return p
            return None
        p, el = poll(ok, timeout, 0.01)
        if p is None:
            raise AssertionError("port %s not %s within %.1fs; status: %s"
                                 % (guest_addr, state, timeout, self._status_or_none()))
        return p, el

    def wait_port_absent(self, guest_addr, timeout=3.0, name=None):
        def ok():
            st = self._status_or_none()
            if not st:
                return None
            g = self.guest(st, name)
            if not g:
                return None
            return not any(p.get("guest") == guest_addr for p in g.get("ports", []))
        v, el = poll(ok, timeout, 0.01)
        if not v:
            raise AssertionError("port %s still in status after %.1fs: %s"
                                 % (guest_addr, timeout, self._status_or_none()))
        return el

    # -- the namespace

    def netns_exec(self, *argv, timeout=10.0, check=True, ns=None):
        ns = ns or self.netns
        r = subprocess.run(["ip", "netns", "exec", ns] + list(argv),
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("ip netns exec %s %s failed: %s"
                                 % (ns, " ".join(argv), r.stderr.strip()))
        return r

    def netns_pids(self, ns=None):
        r = subprocess.run(["ip", "netns", "pids", ns or self.netns], capture_output=True,
                           text=True)
        return [int(x) for x in r.stdout.split() if x.isdigit()]

    def procs_named(self, comm, ns=None):
        out = []
        for pid in self.netns_pids(ns):
            try:
                with open("/proc/%d/comm" % pid) as f:
                    if f.read().strip() == comm:
                        out.append(pid)
            except OSError:
                pass
        return out

    def spawn(self, argv, name, stdin=False, ns=None):
        """Starts argv inside the namespace (ip netns exec execs, so the pid
        is the program's own)."""
        path = os.path.join(self.tmpdir, "%s.%d.out" % (name, len(self.procs)))
        p = Proc(["ip", "netns", "exec", ns or self.netns] + list(argv), path, stdin=stdin)
        self.procs.append(p)
        return p

    def spawn_host(self, argv, name, stdin=False):
        path = os.path.join(self.tmpdir, "host-%s.%d.out" % (name, len(self.procs)))
        p = Proc(list(argv), path, stdin=stdin)
        self.procs.append(p)
        return p

    def guest_server(self, mode, host, port, *extra, stdin=False, ns=None):
        """Starts guestsrv.py MODE in the namespace and waits until it listens."""
        p = self.spawn([PYTHON, "-u", GUESTSRV, mode, host, str(port)] + list(extra),
                       "guestsrv-%s-%d" % (mode, port), stdin=stdin, ns=ns)
        p.wait_event("ready", timeout=10.0)
        return p

    def two_banners(self):
        """Two forwarded banner servers on 0.0.0.0 (tags a and b): the setup
        of the restart tests. Returns (port a, port b, server b)."""
        pa, pb = free_ports(2)
        self.guest_server("banner", "0.0.0.0", pa, "tag=a")
        srv_b = self.guest_server("banner", "0.0.0.0", pb, "tag=b")
        self.wait_port("0.0.0.0:%d" % pa, "forwarding")
        self.wait_port("0.0.0.0:%d" % pb, "forwarding")
        return pa, pb, srv_b

    def settle(self, ns=None, name=None):
        """The positive event an absence check waits for: two fresh banner
        listeners in the guest, the second started once the host reports
        the first. The agent reports in order on one stream, so when the
        host shows the second, everything the agent saw before this call
        (and every scan it made then) has reached the host: a listener that
        is still missing was not reported, however slowly the machine runs.
        Returns the two servers (stop them if their ports matter)."""
        servers = []
        for port in free_ports(2):
            servers.append(self.guest_server("banner", "0.0.0.0", port, "tag=settle", ns=ns))
            self.wait_port("0.0.0.0:%d" % port, "forwarding", timeout=10.0, name=name)
        return servers

    def http_server(self, directory, bind, port, where="guest"):
        """python3 -m http.server: a real client-facing server, not our own."""
        argv = [PYTHON, "-u", "-m", "http.server", str(port), "--bind", bind,
                "--directory", directory]
        if where == "guest":
            p = self.spawn(argv, "http-%d" % port)
        else:
            p = self.spawn_host(argv, "http-%d" % port)
        fam = "6" if ":" in bind else "4"

        def listening():
            if p.p.poll() is not None:
                raise AssertionError("http.server exited: " + p.output())
            cmd = ["ss", "-ltnH", "-" + fam, "sport = :%d" % port]
            if where == "guest":
                r = self.netns_exec(*cmd, check=False)
            else:
                r = subprocess.run(cmd, capture_output=True, text=True)
            return r.stdout.strip()
        v, _ = poll(listening, 10.0, 0.02)
        if not v:
            raise AssertionError("http.server on %s:%d not listening: %s" % (bind, port, p.output()))
        return p

    # -- teardown

    def dump(self, stream=sys.stderr):
        print("\n===== lorelay e2e diagnostics: netns %s, tmpdir %s =====" % (self.netns, self.tmpdir),
              file=stream)
        print("----- lorelayd log -----\n" + self.log(), file=stream)
        for p in self.procs:
            print("----- %s (rc %s) -----\n%s" % (" ".join(p.argv), p.p.poll(), p.output()), file=stream)
        stream.flush()

    def cleanup(self, keep_tmp=False):
        for p in reversed(self.procs):
            try:
                p.stop(timeout=3.0)
            except Exception:  # cleanup must go on whatever happened
                pass
        try:
            self.stop_daemon(timeout=5.0)
        except Exception:
            pass
        self._remove_netns(self.netns)
        if not keep_tmp:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _remove_netns(self, ns):
        # Stragglers inside the namespace: only processes of the namespace
        # this test created, by pid.
        for _ in range(3):
            pids = self.netns_pids(ns)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for f in ("/run/lorelay/netns-%s.sock" % ns, "/run/lorelay/netns-%s.lock" % ns):
            try:
                os.unlink(f)
            except OSError:
                pass


class MultiLorelay(Lorelay):
    """One lorelayd serving several namespaces, named self.names[i]: given
    with --netns (the first n_args of them) or in [guest NAME] sections of
    a config the test writes (write_config) and may rewrite and reload
    (SIGHUP) while the daemon runs. Cleanup removes every namespace."""

    def __init__(self, n, n_args=None, tag="lrm"):
        super().__init__(config=None, tag=tag)
        self.names = ["%s-%d" % (self.netns, i) for i in range(n)]
        self.n_args = n if n_args is None else n_args
        self.config_path = os.path.join(self.tmpdir, "lorelay.ini")

    def write_config(self, text):
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config_path)  # a reload never reads half a file

    def start(self, wait=True, timeout=20.0, log_level="debug"):
        self.daemon_runs += 1
        log = os.path.join(self.tmpdir, "lorelayd.%d.log" % self.daemon_runs)
        self.log_paths.append(log)
        argv = [binary("lorelayd")]
        for ns in self.names[:self.n_args]:
            argv += ["--netns", ns]
        argv += ["--socket", self.sock, "--log-level", log_level]
        if os.path.exists(self.config_path):
            argv += ["-c", self.config_path]
        self.daemon = Proc(argv, log)
        if wait:
            self.wait_guests(timeout=timeout)
        return self.daemon

    def reload(self):
        """SIGHUP: the daemon reads its config file again."""
        mark = len(self.log())
        os.kill(self.daemon.pid, signal.SIGHUP)
        v, _ = poll(lambda: ("reloaded" in self.log()[mark:] or
                             "was not applied" in self.log()[mark:]), 5.0)
        if not v:
            raise AssertionError("no reload line in the log after SIGHUP:\n" + self.log()[mark:])
        return self.log()[mark:]

    def wait_guests(self, names=None, timeout=20.0):
        """Waits until every guest in names (default: all) is connected."""
        names = self.names if names is None else names

        def ok():
            if self.daemon is not None and self.daemon.p.poll() is not None:
                raise AssertionError("lorelayd exited with %s; log:\n%s"
                                     % (self.daemon.p.returncode, self.log()))
            st = self._status_or_none()
            if not st:
                return None
            state = {g["name"]: g["state"] for g in st.get("guests", [])}
            return all(state.get(n) == "connected" for n in names)
        v, el = poll(ok, timeout, 0.05)
        if not v:
            raise AssertionError("guests %s not all connected within %.1fs: %s"
                                 % (names, timeout, self._status_or_none()))
        return el

    def cleanup(self, keep_tmp=False):
        super().cleanup(keep_tmp=True)
        for ns in self.names:
            self._remove_netns(ns)
        if not keep_tmp:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


class LorelayTestCase(unittest.TestCase):
    """Starts a lorelayd on a fresh namespace for every test method."""

    CONFIG = None
    START = True

    def setUp(self):
        self.lr = Lorelay(config=self.CONFIG)
        self.addCleanup(self._teardown_lorelay)
        if self.START:
            self.lr.start()

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return True
        if getattr(outcome, "success", True) is False:
            return True
        result = getattr(outcome, "result", None)
        if result is not None:
            for test, _ in list(result.failures) + list(result.errors):
                if test is self:
                    return True
        return False

    def _check_relay_path(self):
        """In a relay-path variant, the logs must show the path was taken:
        otherwise the variant would pass by testing the default path again."""
        extra = relay_path_variant()
        if not extra or getattr(self, "relay_path_unchecked", None):
            return
        log = self.lr.log()
        relayed = "handed to the host" in log or "relaying to" in log
        if "zerocopyafter=0" in extra and relayed and "zero copy after" not in log:
            self.fail("variant %r: no relay switched to zero copy" % extra)
        if "zerocopy=false" in extra and "zero copy after" in log:
            self.fail("variant %r: a relay took the zero-copy path" % extra)
        if "onehop=false" in extra and "handed to the host" in log:
            self.fail("variant %r: a connection took one hop" % extra)

    def _teardown_lorelay(self):
        failed = self._failed()
        if not failed:
            self._check_relay_path()
        if failed or os.environ.get("LORELAY_E2E_VERBOSE"):
            self.lr.dump()
        self.lr.cleanup(keep_tmp=failed and bool(os.environ.get("LORELAY_E2E_KEEP")))

    # -- shared assertions

    def assertBanner(self, host, port, expect, timeout=5.0):
        try:
            got = fetch(host, port, timeout=timeout)
        except OSError as e:
            self.fail("%s: %r (expected banner %r)" % (hostport(host, port), e, expect))
        self.assertEqual(got, expect, "wrong bytes from %s" % hostport(host, port))

    def assertRefused(self, host, port):
        e = try_connect(host, port)
        self.assertIsInstance(e, ConnectionRefusedError,
                              "%s should refuse connections, got %r" % (hostport(host, port), e))
