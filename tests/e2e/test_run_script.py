"""scripts/run.sh, the README's first command, as a user runs it.

- Each demo has a status socket of its own (/run/lorelay/demo-NAME.sock)
  and prints the lorelayctl line that reaches it: two demos run side by
  side, each status showing its own guest.
- A second run.sh with a name already running stops at once and leaves the
  running demo and its files alone.
- Ctrl-C (SIGINT to its process group) stops lorelayd and removes what the
  demo made: the namespace it created, its lock file, its socket. A
  namespace that was there before stays.
- Its CMake configure line gives no warning about unused variables
  (LORELAY_FUZZ from the preset).
- `scripts/deps.sh run` installs every program the README's tour runs.

LORELAY_BIN_DIR makes run.sh use the built programs instead of installing
and building (its documented test hook).
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from lrharness import bin_dir, binary, poll, read_status, skip_or_fail

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUN_SH = os.path.join(ROOT, "scripts", "run.sh")


# The programs the README's tour runs, and the Debian package of each; the
# tour's own programs and the lines for systemd or Windows are not installed
# by deps.sh run.
TOUR_PACKAGES = {"ip": "iproute2", "python3": "python3", "curl": "curl", "jq": "jq",
                 "dnsmasq": "dnsmasq-base", "dig": "bind9-dnsutils"}
NOT_FROM_DEPS = {"lorelayd", "lorelayctl", "lorelay-init", "lorelay-agent", "sc.exe",
                 "systemctl", "journalctl", "kill", "printf"}


def tour_commands():
    """Every program the README's "A short tour" section runs, by name."""
    text = open(os.path.join(ROOT, "README.md")).read()
    tour = text[text.index("## A short tour"):]
    tour = tour[:tour.index("\n## ", 5)]
    cmds = set()
    for block in re.findall(r"```sh\n(.*?)```", tour, re.S):
        cont = False
        for line in block.splitlines():
            was_cont, cont = cont, line.rstrip().endswith("\\")
            if was_cont:
                continue
            line = re.sub(r"(^|\s)#.*$", "", line)
            for seg in re.split(r"&&|\|\||[;|&]", line):
                try:
                    words = shlex.split(seg)
                except ValueError:
                    words = seg.split()
                while words and re.match(r"^\w+=", words[0]):
                    words = words[1:]
                if words[:3] == ["ip", "netns", "exec"]:
                    cmds.add("ip")
                    words = words[4:]
                if not words or words[0].startswith("$"):
                    continue
                cmds.add(os.path.basename(words[0]))
    return cmds


class RunScript(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lrrun.")
        self.procs = []
        self.names = []

    def tearDown(self):
        for p, _ in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        for n in self.names:
            subprocess.run(["ip", "netns", "delete", n], stderr=subprocess.DEVNULL)
            for f in ("/run/lorelay/demo-%s.sock" % n, "/run/lorelay/netns-%s.lock" % n):
                if os.path.exists(f):
                    os.unlink(f)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def name(self, tag):
        n = "lrrun-%d-%s" % (os.getpid(), tag)
        self.names.append(n)
        return n

    def start(self, name):
        out = os.path.join(self.tmp, "%s.%d.out" % (name, len(self.procs)))
        env = dict(os.environ, LORELAY_BIN_DIR=bin_dir())
        p = subprocess.Popen(["bash", RUN_SH, name], stdout=open(out, "wb"),
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True)
        self.procs.append((p, out))
        return p, out

    def output(self, out):
        with open(out, errors="replace") as f:
            return f.read()

    def wait_up(self, name, out):
        sock = "/run/lorelay/demo-%s.sock" % name

        def up():
            try:
                st = read_status(sock, timeout=1.0)
            except (OSError, ValueError):
                return None
            return st if st.get("guests") else None
        st, _ = poll(up, 15.0, 0.05)
        self.assertIsNotNone(st, "demo %s never answered on %s:\n%s" % (name, sock, self.output(out)))
        return st

    def ctl_line(self, name, out):
        """The lorelayctl command run.sh printed, run as printed."""
        m = re.search(r"^\s*(\S*lorelayctl --socket (\S+) status)\s*$", self.output(out), re.M)
        self.assertIsNotNone(m, "run.sh printed no lorelayctl --socket line:\n" + self.output(out))
        self.assertEqual(m.group(2), "/run/lorelay/demo-%s.sock" % name)
        r = subprocess.run(m.group(1).split(), capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def stop(self, p, out):
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        try:
            rc = p.wait(15)
        except subprocess.TimeoutExpired:
            self.fail("run.sh did not stop within 15 s of SIGINT:\n" + self.output(out))
        return rc

    def test_two_demos_and_cleanup(self):
        a, b = self.name("a"), self.name("b")
        pa, oa = self.start(a)
        self.wait_up(a, oa)
        pb, ob = self.start(b)
        self.wait_up(b, ob)
        ta, tb = self.ctl_line(a, oa), self.ctl_line(b, ob)
        self.assertIn("guest %s " % a, ta)
        self.assertNotIn(b, ta)
        self.assertIn("guest %s " % b, tb)

        # The same name again: refused, the running demo untouched.
        pc, oc = self.start(a)
        self.assertEqual(pc.wait(15), 1, self.output(oc))
        self.assertIn("demo %s runs already" % a, self.output(oc))
        self.wait_up(a, oa)
        self.assertTrue(os.path.exists("/run/lorelay/netns-%s.lock" % a))

        self.assertEqual(self.stop(pa, oa), 0, self.output(oa))
        self.assertFalse(os.path.exists("/run/netns/" + a), "namespace %s left behind" % a)
        self.assertFalse(os.path.exists("/run/lorelay/netns-%s.lock" % a), "lock left behind")
        self.assertFalse(os.path.exists("/run/lorelay/demo-%s.sock" % a), "socket left behind")
        self.assertIn("removed network namespace %s" % a, self.output(oa))
        # The other demo runs on.
        self.wait_up(b, ob)
        self.assertEqual(self.stop(pb, ob), 0, self.output(ob))
        self.assertFalse(os.path.exists("/run/netns/" + b))

    def test_existing_namespace_stays(self):
        n = self.name("keep")
        subprocess.run(["ip", "netns", "add", n], check=True)
        p, out = self.start(n)
        self.wait_up(n, out)
        self.assertEqual(self.stop(p, out), 0, self.output(out))
        self.assertTrue(os.path.exists("/run/netns/" + n), "a namespace run.sh did not make was removed")
        self.assertFalse(os.path.exists("/run/lorelay/netns-%s.lock" % n))
        self.assertFalse(os.path.exists("/run/lorelay/demo-%s.sock" % n))

    def test_deps_cover_the_tour(self):
        r = subprocess.run(["bash", "-c", 'eval "$(sed -n "/^run_pkgs=(/,/)/p" scripts/deps.sh)"; '
                            'echo "${run_pkgs[@]}"'], cwd=ROOT, capture_output=True, text=True,
                           check=True)
        run_pkgs = set(r.stdout.split())
        cmds = tour_commands()
        self.assertIn("dig", cmds)  # the parse found the tour's blocks
        for c in sorted(cmds - NOT_FROM_DEPS):
            self.assertIn(c, TOUR_PACKAGES, "the tour runs %s: name its package here and in "
                          "scripts/deps.sh run" % c)
            self.assertIn(TOUR_PACKAGES[c], run_pkgs,
                          "the tour runs %s, but scripts/deps.sh run does not install %s"
                          % (c, TOUR_PACKAGES[c]))

    def test_configure_without_warnings(self):
        if shutil.which("cmake") is None:
            skip_or_fail(self, "cmake not found (scripts/deps.sh run installs it)")
        text = open(RUN_SH).read()
        m = re.search(r"^\s*(cmake --preset linux [^>\n]*)", text, re.M)
        self.assertIsNotNone(m, "run.sh has no cmake --preset linux line")
        build = os.path.join(self.tmp, "build")
        r = subprocess.run(m.group(1).split() + ["-B", build], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("Warning", r.stderr + r.stdout)
        self.assertNotIn("LORELAY_FUZZ", r.stderr)


if __name__ == "__main__":
    unittest.main()
