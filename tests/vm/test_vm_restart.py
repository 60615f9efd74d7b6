#!/usr/bin/env python3
"""VM tier: the VM's QEMU killed and started again under a running lorelayd.

The VM disappears at once (SIGKILL to QEMU: no shutdown, no close of any
stream by the guest); vhost-device-vsock stays, as it would under a VMM
restart. lorelayd must notice, reconnect to the new VM's agent by itself,
drop the stand-ins of listeners that were only in the old VM and forward
the new VM's listeners.
"""

import socket
import time

import lrvm
from lrvm import VMTestCase, free_ports, log, poll


class Restart(VMTestCase):

    def test_qemu_killed_and_started_again(self):
        pa, pb = free_ports(2)
        self.serve("echo", "0.0.0.0", pa)
        self.lr.wait_port("0.0.0.0:%d" % pa, timeout=5.0)
        self.vm.kill_qemu()
        self.guest_pids = []          # they died with the VM
        t0 = time.monotonic()
        boot = self.vm.boot()
        agent = self.vm.wait_agent()
        self.vm.server("echo", "::", pb)

        def state():
            st = self.lr._status_or_none()
            g = self.lr.guest(st) if st else None
            if not g or g.get("state") != "connected":
                return None
            ports = {p["guest"]: p for p in g.get("ports", [])}
            return ports if "[::]:%d" % pb in ports else None
        ports, _ = poll(state, 60.0, 0.05)
        took = time.monotonic() - t0
        self.assertIsNotNone(ports, "lorelayd did not reconnect to the new VM and forward its "
                             "listener: %s" % self.lr._status_or_none())
        self.assertNotIn("0.0.0.0:%d" % pa, ports, "the old VM's listener is still forwarded")
        self.assertIsInstance(lrvm.H.try_connect("127.0.0.1", pa), ConnectionRefusedError,
                              "stale stand-in for the old VM's listener")
        s = socket.create_connection(("::1", pb), timeout=10)
        s.sendall(b"new vm")
        self.assertEqual(s.recv(100), b"new vm")
        s.close()
        log("MEASURE vm_boot: control server %.2f s, agent's vsock port %.2f s after QEMU started"
            % (boot, agent))
        log("MEASURE vm_qemu_restart: lorelayd forwarding the new VM's listener %.2f s after "
            "QEMU was started again" % took)


if __name__ == "__main__":
    lrvm.main()
