"""Hostile agent 6: log injection and log flooding. Strings from the guest
(WELCOME's guest name and version, an ERROR's text) go into lorelayd's log;
they must come out with control characters escaped: no raw ESC (0x1b) and
no injected newline (no log line starts with the injected text). 1 000
REVERSE_OPENs for a port reversePorts does not list are each refused, but
produce at most a handful of warning lines."""

import re
import time
import unittest

from lrharness import free_port
from lrhostile import FakeGuestDaemon, HostileTestCase, log_lines, measure
import lrpeer as P  # tests/lrpeer.py, on the path through lrharness

EVIL_NAME = b"evil\x1b[31m\nINJECTED-NAME 00:00:00.000 lorelayd error: fake\x1b[0m"
EVIL_VERSION = b"1.0\x1b[2J\rINJECTED-VERSION"
EVIL_ERROR = "bye\x1b]0;title\x07\nINJECTED-ERROR line"
N_UNLISTED = 1000


class LogInjection(HostileTestCase):
    START = False

    def test_escapes_and_rate_limit(self):
        listed, unlisted = free_port(), free_port()
        self.fg.cleanup()
        fg = self.fg = FakeGuestDaemon(config="[lorelay]\nreversePorts = %d\n" % listed)
        fg.start()
        ctl = fg.control(name=EVIL_NAME, agent_version=EVIL_VERSION)
        ctl.start_reader()
        fg.wait_connected()
        mark = len(fg.log_bytes())

        t0 = time.monotonic()
        ctl.send(b"".join(P.reverse_open_frame(i + 1, 4, unlisted) for i in range(N_UNLISTED)))
        got = ctl.wait_for(lambda s: s.count(P.REVERSE_FAIL) >= N_UNLISTED, timeout=5.0)
        measure("reverse_fail_for_unlisted", ctl.count(P.REVERSE_FAIL), "of %d in %.2f s"
                % (N_UNLISTED, time.monotonic() - t0))
        self.check(got, "only %d of %d unlisted REVERSE_OPENs answered with REVERSE_FAIL"
                   % (ctl.count(P.REVERSE_FAIL), N_UNLISTED))
        # An ERROR from the agent with an injection in its text (lorelayd
        # logs "agent refused us: ...", then reconnects). It comes after the
        # flood on the same stream, so once its line is in the log every
        # line the flood caused is there too: the count below is complete.
        ctl.send(P.error_frame(P.ERR_PROTOCOL, EVIL_ERROR))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and b"bye" not in fg.log_bytes()[mark:]:
            time.sleep(0.05)
        after = fg.log_bytes()[mark:]
        flood_log = after[:after.find(b"bye")].decode(errors="replace")
        flood_log = flood_log[:flood_log.rfind("\n") + 1]  # the lines before the ERROR's
        warns = log_lines(flood_log, r"\b(warn|warning|error):")
        measure("warning_lines_for_unlisted_flood", len(warns))
        self.check(len(warns) <= 5, "%d warning lines for %d unlisted REVERSE_OPENs (want a "
                   "handful):\n%s" % (len(warns), N_UNLISTED, "\n".join(warns[:5])))

        raw = fg.log_bytes()
        text = raw.decode(errors="replace")
        measure("log_bytes", len(raw))
        self.check(b"bye" in raw[mark:], "lorelayd did not log the agent's ERROR text at all")
        self.check(b"evil" in raw, "lorelayd did not log the guest name at all")
        self.check(b"\x1b" not in raw, "raw ESC (0x1b) in lorelayd's log, at: %r"
                   % raw[max(0, raw.find(b"\x1b") - 40):raw.find(b"\x1b") + 20])
        self.check(b"\x07" not in raw and b"\r" not in raw, "raw BEL or CR in lorelayd's log")
        injected = [l for l in text.splitlines() if re.match(r"\s*INJECTED", l)]
        self.check(not injected, "guest text started its own log line(s): %r" % injected[:3])
        self.check(fg.alive(), "lorelayd died")
        self.verify()


if __name__ == "__main__":
    unittest.main()
