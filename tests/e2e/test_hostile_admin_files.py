"""Admin inputs that are not what they seem (issue 18, finding 7).

A tokenFile that is a FIFO used to block lorelayd's loop until a writer
came (on start and on reload); a config that is /dev/zero was parsed
forever, ignoring SIGTERM. Both files are now opened without blocking,
refused unless they are regular files, and read with a size cap: each case
ends in a one-line error within a second, and the daemon that reloads keeps
running and answering status."""

import os
import signal
import subprocess
import time
import unittest

from lrhostile import HostileTestCase, measure
from lrharness import binary


def run_briefly(argv, limit=5.0):
    """Runs argv; SIGTERM at `limit` s, SIGKILL 2 s later. (rc, output, seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=2.0)
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
    return p.returncode, out.decode(errors="replace"), time.monotonic() - t0


class AdminFiles(HostileTestCase):
    START = False

    def test_config_dev_zero(self):
        rc, out, took = run_briefly([binary("lorelayd"), "-c", "/dev/zero", "--guest",
                                     "unix:" + self.fg.agent_path, "--socket", self.fg.sock])
        measure("lorelayd -c /dev/zero", "exit %s after %.2f s" % (rc, took))
        self.assertLess(took, 2.0, "lorelayd -c /dev/zero ran %.1f s: %s" % (took, out[-500:]))
        self.assertNotEqual(rc, 0)
        self.assertIn("/dev/zero is a character device, not a regular file", out)

    def test_agent_config_dev_zero(self):
        rc, out, took = run_briefly([binary("lorelay-agent"), "--config", "/dev/zero",
                                     "--listen", "unix:" + self.fg.tmpdir + "/a.sock"])
        measure("lorelay-agent --config /dev/zero", "exit %s after %.2f s" % (rc, took))
        self.assertLess(took, 2.0, out[-500:])
        self.assertNotEqual(rc, 0)
        self.assertIn("not a regular file", out)

    def test_token_fifo_at_start(self):
        fifo = os.path.join(self.fg.tmpdir, "token.fifo")
        os.mkfifo(fifo, 0o600)
        rc, out, took = run_briefly([binary("lorelayd"), "--guest", "unix:" + self.fg.agent_path,
                                     "--token-file", fifo, "--socket", self.fg.sock])
        measure("lorelayd --token-file FIFO", "exit %s after %.2f s" % (rc, took))
        self.assertLess(took, 2.0, "lorelayd waited %.1f s on a FIFO token file" % took)
        self.assertNotEqual(rc, 0)
        self.assertIn("is a FIFO, not a regular file", out)

    def test_token_fifo_on_reload(self):
        fifo = os.path.join(self.fg.tmpdir, "token.fifo")
        os.mkfifo(fifo, 0o600)
        cfg = os.path.join(self.fg.tmpdir, "lorelay.ini")
        with open(cfg, "w") as f:
            f.write("[lorelay]\n")
        self.fg.config_path = cfg
        self.fg.start()
        self.fg.control()
        self.fg.wait_connected()
        with open(cfg, "w") as f:
            f.write("[guest h]\ntransport = unix:%s/other.sock\ntokenFile = %s\n"
                    % (self.fg.tmpdir, fifo))
        mark = len(self.fg.log())
        t0 = time.monotonic()
        os.kill(self.fg.pid, signal.SIGHUP)
        time.sleep(0.2)
        st = self.fg.status_or_none(timeout=1.0)
        took = time.monotonic() - t0
        measure("status during a reload naming a FIFO token file", "%.2f s" % took)
        self.assertIsNotNone(st, "lorelayd did not answer status after the reload: its loop "
                             "is blocked on the FIFO")
        self.assertLess(took, 1.5)
        self.assertIn("is a FIFO, not a regular file", self.fg.log()[mark:])
        self.assertTrue(self.fg.alive())
        t0 = time.monotonic()
        rc = self.fg.stop(timeout=3.0)
        measure("SIGTERM after the refused reload", "exit %s after %.2f s"
                % (rc, time.monotonic() - t0))
        self.assertEqual(rc, 0)


if __name__ == "__main__":
    unittest.main()
