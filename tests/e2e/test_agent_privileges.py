"""The --netns agent runs with only what it needs (issue 18, finding 11).

lorelayd starts the agent as root; once set up (eBPF loaded and attached,
transport listening) it must keep only CAP_DAC_READ_SEARCH and
CAP_SYS_PTRACE (the owner column: other users' /proc/PID/fd) and
CAP_NET_BIND_SERVICE (reverse ports below 1024), in its effective,
permitted and bounding sets, with no_new_privs set. Before, CapEff was
000001ffffffffff and NoNewPrivs 0. Forwarding and the owner column of a
server run by another user (uid 65534) still work."""

import os
import unittest

from lrharness import LorelayTestCase, free_port, poll
from lrhostile import agent_pid, echo_through, measure

CAP_DAC_READ_SEARCH, CAP_NET_BIND_SERVICE, CAP_SYS_PTRACE = 2, 10, 19
WANT = (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_NET_BIND_SERVICE) | (1 << CAP_SYS_PTRACE)

OWNED = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8)
print("ready", flush=True)
time.sleep(60)
"""


def status_fields(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


class AgentPrivileges(LorelayTestCase):

    def test_caps_after_setup(self):
        lr = self.lr
        pid, _ = poll(lambda: agent_pid(lr), 10.0, 0.05)
        self.assertIsNotNone(pid, "no single lorelay-agent in the namespace")
        st, _ = poll(lambda: (lambda s: s if int(s["CapEff"], 16) != (1 << 41) - 1 else None)(
            status_fields(pid)), 5.0, 0.05)
        st = st or status_fields(pid)
        for k in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb", "NoNewPrivs"):
            measure("agent %s" % k, st.get(k))
        self.assertEqual(int(st["CapEff"], 16), WANT, "CapEff %s" % st["CapEff"])
        self.assertEqual(int(st["CapPrm"], 16), WANT)
        self.assertEqual(int(st["CapBnd"], 16), WANT)
        self.assertEqual(int(st["CapInh"], 16), 0)
        self.assertEqual(int(st["CapAmb"], 16), 0)
        self.assertEqual(st["NoNewPrivs"], "1")
        self.assertIn("privileges: kept cap_dac_read_search, cap_net_bind_service, "
                      "cap_sys_ptrace; no_new_privs", lr.log())

        # Still forwards, and still names the owner of another user's server.
        port = free_port()
        srv = lr.spawn(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                        "/usr/bin/python3", "-u", "-c", OWNED, str(port)], "owned")
        poll(lambda: "ready" in srv.output(), 10.0)
        p, _ = lr.wait_port("0.0.0.0:%d" % port, "forwarding", timeout=10.0)

        def owner():
            q = lr.port("0.0.0.0:%d" % port)
            return q.get("process") if q else None
        proc, _ = poll(owner, 5.0, 0.1)
        measure("owner of a uid-65534 server", proc)
        self.assertIsInstance(proc, dict, "no owner for another user's server: %r"
                              % lr.port("0.0.0.0:%d" % port))
        self.assertEqual(proc["pid"], srv.pid)


if __name__ == "__main__":
    unittest.main()
