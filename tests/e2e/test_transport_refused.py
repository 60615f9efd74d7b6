"""A guest address this platform cannot reach is refused at start.

hvsock: is Hyper-V's socket family, reachable only from lorelayd.exe on
Windows: on Linux, --guest hvsock:... is a usage error (exit 2, one line
naming it and what Linux takes) instead of a guest retried forever; a
[guest NAME] section naming one stops the start too. --help lists only the
transports Linux has. (The Windows side, unix:/vsock:/fc:/--netns refused
by lorelayd.exe, is tested under Wine: win32_cli.)
"""

import os
import subprocess
import tempfile
import unittest

from lrharness import binary

HV = "hvsock:D2F7A9B4-1C3E-4A5B-8D6F-0E1F2A3B4C5D:50505"


class TransportRefused(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lrtr.")
        self.sock = os.path.join(self.tmp, "s.sock")

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.tmp])

    def run_lorelayd(self, *args):
        return subprocess.run([binary("lorelayd"), "--socket", self.sock] + list(args),
                              capture_output=True, text=True, timeout=10)

    def test_hvsock_guest_is_a_usage_error(self):
        r = self.run_lorelayd("--guest", HV)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("lorelayd: --guest %s: hvsock: guests need lorelayd.exe on Windows" % HV,
                      r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertFalse(os.path.exists(self.sock), "a status socket was made")

    def test_hvsock_section_stops_the_start(self):
        ini = os.path.join(self.tmp, "l.ini")
        with open(ini, "w") as f:
            f.write("[guest vm]\ntransport = %s\n" % HV)
        r = self.run_lorelayd("-c", ini)
        self.assertNotEqual(r.returncode, 0, r.stderr)
        self.assertIn("hvsock: guests need lorelayd.exe on Windows", r.stderr)

    def test_help_lists_the_linux_transports(self):
        r = subprocess.run([binary("lorelayd"), "--help"], capture_output=True, text=True,
                           timeout=10)
        self.assertEqual(r.returncode, 0)
        for t in ("unix:PATH", "tcp:HOST:PORT", "vsock:CID:PORT", "fc:UDS_PATH:PORT", "--netns"):
            self.assertIn(t, r.stdout)
        self.assertNotIn("hvsock", r.stdout)
        self.assertIn("TCP and UDP", r.stdout)


if __name__ == "__main__":
    unittest.main()
