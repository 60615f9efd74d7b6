"""Weak keys and exposed key files are refused by both programs (issue 18,
finding 8).

A key of 16 x "a", of 16 NUL bytes, or one short pattern repeated; a key
file of mode 0644 or 0666; a key file owned by another user (uid 65534):
lorelayd and lorelay-agent each refuse to start, with one line naming the
file, what is wrong and the fix. A good key in a 0600 file still starts
both."""

import os
import subprocess
import tempfile
import shutil
import time
import unittest

from lrhostile import measure
from lrharness import binary, free_port

GOOD = b"q8Vd0fK2nL5xZr7PbT1mWc4yHs9jGe3A"


def run_both(key_path):
    """(lorelayd output, agent output), each run at most 3 s."""
    outs = []
    tmp = os.path.dirname(key_path)
    for argv in ([binary("lorelayd"), "--guest", "tcp:127.0.0.1:%d" % free_port(),
                  "--token-file", key_path, "--socket", os.path.join(tmp, "s.sock")],
                 [binary("lorelay-agent"), "--listen", "tcp:127.0.0.1:%d" % free_port(),
                  "--token-file", key_path]):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            out, _ = p.communicate(timeout=1.5)
            outs.append((p.returncode, out.decode(errors="replace")))
        except subprocess.TimeoutExpired:  # running: it accepted the key
            p.terminate()
            p.communicate()
            outs.append((None, ""))
    return outs


class WeakKeys(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="lrkeys.")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def key(self, name, data, mode=0o600, uid=None):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        if uid is not None:
            os.chown(path, uid, -1)
        return path

    def refused(self, path, words):
        for (rc, out), who in zip(run_both(path), ("lorelayd", "lorelay-agent")):
            line = [l for l in out.splitlines() if path in l]
            measure("%s, %s" % (who, os.path.basename(path)),
                    "exit %s: %s" % (rc, line[0] if line else out.strip()[-200:]))
            self.assertIsNotNone(rc, "%s started with %s" % (who, path))
            self.assertNotEqual(rc, 0)
            self.assertTrue(line, "%s's error does not name the file: %r" % (who, out))
            for w in words:
                self.assertIn(w, line[0])

    def test_weak_keys(self):
        self.refused(self.key("aaaa", b"a" * 16 + b"\n"), ["weak", "distinct byte values"])
        self.refused(self.key("nul", b"\0" * 16), ["weak", "distinct byte values"])
        self.refused(self.key("pattern", b"0123456789abcdef" * 2 + b"\n"),
                     ["weak", "16-byte pattern repeated", "head -c 32 /dev/urandom"])

    def test_exposed_key_files(self):
        self.refused(self.key("k644", GOOD, 0o644), ["mode 0644", "chmod 600"])
        self.refused(self.key("k666", GOOD, 0o666), ["mode 0666", "chmod 600"])
        self.refused(self.key("kother", GOOD, 0o600, uid=65534),
                     ["belongs to uid 65534", "chown"])

    def test_good_key_starts_both(self):
        path = self.key("good", GOOD + b"\n")
        for (rc, out), who in zip(run_both(path), ("lorelayd", "lorelay-agent")):
            self.assertIsNone(rc, "%s refused a good 0600 key: %s" % (who, out))


if __name__ == "__main__":
    unittest.main()
