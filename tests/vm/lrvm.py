"""VM tier harness: a real Linux VM with a real virtio-vsock device, driven
from the host.

One VM is QEMU running Debian's own kernel with the initramfs of
scripts/vm-image.sh (busybox, lorelay's binaries, lorelay-vmtestsrv), whose
PID 1 is lorelay-init serving the agent on vsock:any:50505. Its vsock
device is vhost-user-vsock-pci backed by vhost-device-vsock, whose host
side is a Unix socket speaking Firecracker's hybrid-vsock handshake: the
host's lorelayd reaches the agent as fc:UDS:50505. The machine's own
AF_VSOCK is never used: the vsock exists only inside the VM.

The host drives the VM through its second serial port (a Unix-socket
chardev), where `lorelay-vmtestsrv ctl` runs each line "@@@N COMMAND" with
its own sh and answers with the output and "@@@N:STATUS". Every wait has a
deadline; the guest console (the first serial port, a file) is printed
whenever a test fails, with the lorelayd log.

KVM is used only where it really boots this kernel: the first boot on a
machine with /dev/kvm tries it with a short deadline and falls back to TCG
(the choice is logged, and cached per QEMU + kernel in the build tree so
every test file does not pay the probe). LORELAY_VM_ACCEL=tcg|kvm forces it.

Stdlib only, like tests/e2e/lrharness.py, whose process and lorelayd
helpers this reuses.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import lrharness as H  # noqa: E402
from lrharness import Lorelay, Proc, poll, free_port, free_ports  # noqa: E402,F401
import lrci  # noqa: E402

AGENT_PORT = 50505
QEMU = "qemu-system-x86_64"
BACKEND = "vhost-device-vsock"
BOOT_TIMEOUT = float(os.environ.get("LORELAY_VM_BOOT_TIMEOUT", "60"))
KVM_PROBE_TIMEOUT = 12.0


def log(msg):
    print("[vm %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def guarded(argv):
    """argv, killed if this test process dies first (ctest's timeout, a
    crash): QEMU, its backend and lorelayd run in sessions of their own,
    so nothing else would stop an orphaned VM from spinning a core."""
    if shutil.which("setpriv"):
        return ["setpriv", "--pdeathsig", "KILL", "--"] + list(argv)
    return list(argv)


def vmtestsrv():
    return os.environ.get("LORELAY_VMTESTSRV") or os.path.join(H.bin_dir(), "lorelay-vmtestsrv")


def kernel_release():
    best = None
    for f in sorted(os.listdir("/boot")) if os.path.isdir("/boot") else []:
        if f.startswith("vmlinuz-"):
            r = f[len("vmlinuz-"):]
            if os.path.exists("/lib/modules/%s/modules.dep" % r):
                best = r
    return best


def missing():
    """What this machine lacks to run the VM tier (empty: nothing)."""
    out = []
    if shutil.which(QEMU) is None:
        out.append("%s not installed (apt-get install qemu-system-x86)" % QEMU)
    if shutil.which(BACKEND) is None:
        out.append("%s not installed (scripts/deps.sh test installs it from cmake/vm-deps.lock)"
                   % BACKEND)
    if shutil.which("busybox") is None:
        out.append("busybox not installed (apt-get install busybox-static)")
    if shutil.which("cpio") is None:
        out.append("cpio not installed")
    k = kernel_release()
    if k is None:
        out.append("no /boot/vmlinuz-* with /lib/modules (apt-get install linux-image-amd64)")
    elif not os.access("/boot/vmlinuz-" + k, os.R_OK):
        out.append("/boot/vmlinuz-%s is not readable (run as root)" % k)
    if not os.access(vmtestsrv(), os.X_OK):
        out.append("lorelay-vmtestsrv not built at %s" % vmtestsrv())
    bins = H.missing_binaries()
    if bins:
        out.append("lorelay binaries not built in %s: %s" % (H.bin_dir(), ", ".join(bins)))
    return out


def check_environment_or_exit(name):
    m = missing()
    if m:
        lrci.exit_skip_or_fail("VM tier prerequisites missing: " + "; ".join(m), name=name)


class GuestError(AssertionError):
    pass


class NotAttached(Exception):
    """QEMU exited at once: the backend's socket was not there."""


class VM:
    """One test VM: its image, its vhost-device-vsock backend, its QEMU."""

    def __init__(self, workdir, name="lrvm"):
        self.dir = workdir
        self.name = name
        self.uds = os.path.join(workdir, "v.sock")          # hybrid vsock, lorelayd's side
        self.vhost = os.path.join(workdir, "vhost.sock")    # QEMU <-> backend
        self.ctl_path = os.path.join(workdir, "ctl.sock")   # the control shell's serial port
        self.console_path = os.path.join(workdir, "console.log")
        self.image = os.path.join(workdir, "image")
        self.backend = None
        self.qemu = None
        self.ctl = None
        self.boots = 0
        self.accel = None
        self.boot_s = None
        self._seq = 0
        self._consoles = []

    @property
    def transport(self):
        return "fc:%s:%d" % (self.uds, AGENT_PORT)

    # -- image and backend

    def build_image(self):
        r = subprocess.run(["sh", os.path.join(ROOT, "scripts", "vm-image.sh"), H.bin_dir(),
                            self.image, "", os.path.abspath(vmtestsrv())],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise AssertionError("scripts/vm-image.sh failed: " + r.stderr)
        log(r.stderr.strip())

    def start_backend(self):
        for p in (self.uds, self.vhost):
            if os.path.exists(p):
                os.unlink(p)
        self.backend = Proc(guarded([BACKEND, "--vm", "guest-cid=3,socket=%s,uds-path=%s"
                                     % (self.vhost, self.uds)]),
                            os.path.join(self.dir, "backend.log"))
        ok, _ = poll(lambda: os.path.exists(self.vhost) or not self.backend.alive(), 10.0, 0.02)
        if not self.backend.alive() or not os.path.exists(self.vhost):
            raise AssertionError("%s did not create %s: %s"
                                 % (BACKEND, self.vhost, self.backend.output()))

    # -- QEMU

    def _qemu_argv(self, accel):
        return [QEMU, "-accel", accel, "-m", "512M", "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-kernel", os.path.join(self.image, "vmlinuz"),
                "-initrd", os.path.join(self.image, "initramfs.cpio"),
                "-append", "console=ttyS0 panic=-1 loglevel=4",
                "-chardev", "file,id=con,path=%s" % self.console_path, "-serial", "chardev:con",
                "-chardev", "socket,id=ctl,path=%s,server=on,wait=off" % self.ctl_path,
                "-serial", "chardev:ctl",
                "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
                "-numa", "node,memdev=mem",
                "-chardev", "socket,id=vs,path=%s" % self.vhost,
                "-device", "vhost-user-vsock-pci,chardev=vs"]

    def _start_qemu(self, accel):
        self._save_console()
        if os.path.exists(self.ctl_path):
            os.unlink(self.ctl_path)
        self.boots += 1
        self.qemu = Proc(guarded(self._qemu_argv(accel)),
                         os.path.join(self.dir, "qemu.%d.log" % self.boots))

    def _boot_attached(self, accel, timeout):
        """Starts QEMU and waits for its control server. A backend whose
        previous QEMU went away unlinks and binds its socket again, so a QEMU
        started in between finds no socket and exits at once; it is started
        again (that is not a failed boot)."""
        t0 = time.monotonic()
        while True:
            if not self.backend.alive():
                raise AssertionError("%s exited: %s" % (BACKEND, self.backend.output()))
            poll(lambda: os.path.exists(self.vhost), 5.0, 0.02)
            self._start_qemu(accel)
            try:
                return self._wait_ready(timeout - (time.monotonic() - t0))
            except NotAttached:
                if time.monotonic() - t0 > min(15.0, timeout):
                    raise AssertionError("QEMU could not attach to %s: %s"
                                         % (self.vhost, self.qemu.output()))
                self.boots -= 1
                time.sleep(0.2)

    def _save_console(self):
        try:
            with open(self.console_path, "rb") as f:
                self._consoles.append(f.read().decode(errors="replace"))
            os.unlink(self.console_path)
        except OSError:
            pass

    def _probe_cache(self):
        d = os.environ.get("LORELAY_VM_STATE_DIR") or os.path.join(H.bin_dir(), "..", "tests", "vm")
        qv = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        return os.path.join(d, "accel-probe"), "%s | %s" % (qv.strip(), kernel_release())

    def choose_accel(self):
        forced = os.environ.get("LORELAY_VM_ACCEL")
        if forced in ("tcg", "kvm"):
            return forced, "forced by LORELAY_VM_ACCEL"
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "tcg", "no usable /dev/kvm"
        path, key = self._probe_cache()
        try:
            with open(path) as f:
                k, verdict = f.read().rstrip("\n").split("\n")
            if k == key and verdict in ("kvm", "tcg"):
                return verdict, "cached probe (%s): KVM %s this kernel" % (
                    path, "boots" if verdict == "kvm" else "does not boot")
        except (OSError, ValueError):
            pass
        log("probing KVM: booting once under it with a %.0f s deadline" % KVM_PROBE_TIMEOUT)
        try:
            self._boot_attached("kvm", KVM_PROBE_TIMEOUT)
            verdict = "kvm"
        except AssertionError:
            verdict = "tcg"
        self.kill_qemu()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("%s\n%s\n" % (key, verdict))
        except OSError:
            pass
        return verdict, "probe: KVM %s within %.0f s" % (
            "booted the kernel" if verdict == "kvm" else "did not boot the kernel", KVM_PROBE_TIMEOUT)

    def boot(self, timeout=BOOT_TIMEOUT):
        """Starts QEMU and waits until the control shell answers. Returns
        the seconds from QEMU's start."""
        if self.accel is None:
            self.accel, why = self.choose_accel()
            log("accelerator: %s (%s)" % (self.accel, why))
        t0 = self.t_boot = time.monotonic()
        self._boot_attached(self.accel, timeout)
        self.boot_s = time.monotonic() - t0
        return self.boot_s

    def agent_answers(self, timeout=1.0):
        """True if CONNECT to the agent's port over the hybrid-vsock socket
        gets "OK": something in the VM listens on vsock port 50505."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.uds)
            s.sendall(b"CONNECT %d\n" % AGENT_PORT)
            return s.recv(64).startswith(b"OK ")
        except OSError:
            return False
        finally:
            s.close()

    def wait_agent(self, timeout=BOOT_TIMEOUT):
        """Seconds from QEMU's start until the agent's vsock port answers."""
        v, _ = poll(lambda: self.agent_answers(), timeout, 0.05)
        if not v:
            raise AssertionError("the agent's vsock port never answered")
        return time.monotonic() - self.t_boot

    def _wait_ready(self, timeout):
        t0 = time.monotonic()
        self.ctl = None
        while self.ctl is None:
            if not self.qemu.alive():
                if "Failed to connect" in self.qemu.output():
                    raise NotAttached()
                raise AssertionError("QEMU exited (rc %s): %s" % (self.qemu.p.returncode,
                                                                  self.qemu.output()))
            if time.monotonic() - t0 > timeout:
                raise AssertionError("QEMU's control socket %s never appeared" % self.ctl_path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.ctl_path)
                self.ctl = s
            except OSError:
                s.close()
                time.sleep(0.02)
        self._buf = b""
        # The shell starts late in boot; what reaches the port before it
        # reads is lost, so ask again until one answer comes back.
        while True:
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                raise AssertionError("the VM's control shell did not answer within %.0f s" % timeout)
            try:
                self.sh("true", timeout=min(0.5, left))
                return
            except (GuestError, OSError):
                if not self.qemu.alive():
                    if "Failed to connect" in self.qemu.output():
                        raise NotAttached()
                    raise AssertionError("QEMU exited during boot (rc %s): %s"
                                         % (self.qemu.p.returncode, self.qemu.output()))

    def sh(self, cmd, timeout=20.0):
        """Runs one command line in the VM's control shell. Returns (exit
        status, output). The command's stdin is /dev/null."""
        if "\n" in cmd:
            raise ValueError("one line per VM command: %r" % cmd)
        self._seq += 1
        tag = "@@@%d" % self._seq
        self.ctl.settimeout(5.0)
        self.ctl.sendall(("%s %s\n" % (tag, cmd)).encode())
        pat = re.compile(rb"\n" + re.escape(tag.encode()) + rb":(\d+)\n")
        t0 = time.monotonic()
        while True:
            m = pat.search(self._buf)
            if m:
                out = self._buf[:m.start()]
                self._buf = self._buf[m.end():]
                # Answers to earlier, timed-out commands end before ours.
                out = re.sub(rb"(?s).*\n@@@\d+:\d+\n", b"", out)
                return int(m.group(1)), out.decode(errors="replace")
            left = timeout - (time.monotonic() - t0)
            if left <= 0:
                raise GuestError("VM command timed out after %.1f s: %s" % (timeout, cmd))
            self.ctl.settimeout(left)
            try:
                b = self.ctl.recv(65536)
            except socket.timeout:
                continue
            if not b:
                raise GuestError("VM control port closed during: %s" % cmd)
            self._buf += b

    def run(self, cmd, timeout=20.0):
        """sh(), and a non-zero status is an error. Returns the output."""
        rc, out = self.sh(cmd, timeout)
        if rc != 0:
            raise GuestError("in the VM, `%s` exited %d: %s" % (cmd, rc, out.strip()))
        return out

    def server(self, mode, addr, port, *extra):
        """Starts lorelay-vmtestsrv in the VM; returns its pid once it
        listens (the command returns only then)."""
        out = self.run("lorelay-vmtestsrv %s %s %d %s" % (mode, addr, port,
                                                          " ".join(str(x) for x in extra)))
        return int(out.strip().split()[-1])

    def kill(self, pid, sig="TERM"):
        self.sh("kill -%s %d" % (sig, pid))

    def pidof(self, comm):
        rc, out = self.sh("pidof %s" % comm)
        return [int(x) for x in out.split()] if rc == 0 else []

    # -- teardown

    def kill_qemu(self):
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.qemu is not None:
            self.qemu.stop(sig=signal.SIGKILL, timeout=5.0)

    def stop(self):
        self.kill_qemu()
        if self.backend is not None:
            self.backend.stop(timeout=3.0)

    def console(self):
        cur = ""
        try:
            with open(self.console_path, "rb") as f:
                cur = f.read().decode(errors="replace")
        except OSError:
            pass
        parts = ["--- boot %d ---\n%s" % (i + 1, c) for i, c in enumerate(self._consoles + [cur])]
        return "\n".join(parts)

    def dump(self, stream=sys.stderr):
        print("===== VM %s: %s, %d boot(s), accel %s =====" % (self.name, self.dir, self.boots,
                                                               self.accel), file=stream)
        print("----- guest console -----\n" + self.console(), file=stream)
        for p in (self.backend, self.qemu):
            if p is not None:
                name = p.argv[4] if p.argv[0] == "setpriv" else p.argv[0]
                print("----- %s -----\n%s" % (name, p.output()), file=stream)
        if self.ctl is not None:
            try:
                rc, out = self.sh("ps; ls -l /tmp; tail -n 50 /tmp/*.log", timeout=5)
                print("----- guest processes -----\n" + out, file=stream)
            except (GuestError, OSError):
                pass
        stream.flush()


class VMLorelay(Lorelay):
    """lorelayd for the VM guest: --guest fc:UDS:PORT, or a [guest NAME]
    section of a config file when section is given."""

    def __init__(self, vm, section=None, config=""):
        super().__init__(config=None, tag="lrv")
        self.vm = vm
        self.section = section
        text = config
        if section:
            text = "%s\n[guest %s]\ntransport = %s\n" % (config, section, vm.transport)
        if text:
            self.config_path = os.path.join(self.tmpdir, "lorelay.ini")
            with open(self.config_path, "w") as f:
                f.write(text)

    def start(self, wait=True, timeout=20.0):
        self.daemon_runs += 1
        path = os.path.join(self.tmpdir, "lorelayd.%d.log" % self.daemon_runs)
        self.log_paths.append(path)
        argv = [H.binary("lorelayd"), "--socket", self.sock, "--log-level", "debug"]
        if not self.section:
            argv += ["--guest", self.vm.transport]
        if self.config_path:
            argv += ["-c", self.config_path]
        self.daemon = Proc(guarded(argv), path)
        if wait:
            self.wait_connected(timeout)
        return self.daemon

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
        if not keep_tmp:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


class VMTestCase(unittest.TestCase):
    """One VM per test class (booted in setUpClass), one lorelayd per test.
    Guest servers a test starts are killed after it."""

    SECTION = None   # a [guest NAME] section instead of --guest
    CONFIG = ""

    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="lrvm-%s." % cls.__name__)
        cls.vm = VM(cls.workdir)
        try:
            cls.vm.build_image()
            cls.vm.start_backend()
            took = cls.vm.boot()
            ready = cls.vm.wait_agent()
            log("VM booted: control server answering %.2f s, agent's vsock port %.2f s after "
                "QEMU started" % (took, ready))
        except Exception:
            cls.vm.dump()
            cls.vm.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.vm.stop()
        if not os.environ.get("LORELAY_VM_KEEP"):
            shutil.rmtree(cls.workdir, ignore_errors=True)

    def setUp(self):
        self.guest_pids = []
        self.lr = VMLorelay(self.vm, section=self.SECTION, config=self.CONFIG)
        self.addCleanup(self._teardown)
        self.lr.start()

    def serve(self, mode, addr, port, *extra):
        pid = self.vm.server(mode, addr, port, *extra)
        self.guest_pids.append(pid)
        return pid

    def _teardown(self):
        failed = H.LorelayTestCase._failed(self)
        if failed or os.environ.get("LORELAY_E2E_VERBOSE"):
            self.lr.dump()
            self.vm.dump()
        if self.guest_pids and self.vm.ctl is not None:
            try:
                self.vm.sh("kill -9 %s" % " ".join(str(p) for p in self.guest_pids), timeout=5)
            except (GuestError, OSError):
                pass
        self.lr.cleanup()


def main():
    check_environment_or_exit(os.path.basename(sys.argv[0]))
    unittest.main(verbosity=2)
