"""Scenario 8: a reset is passed through as a reset, both ways, and a guest
server that refuses is seen by the host client as a reset, not a hang or a
clean EOF (which would look like an empty but successful reply)."""

import socket
import struct
import sys
import time
import unittest

from lrharness import LorelayTestCase, free_port


class ResetPassThrough(LorelayTestCase):

    def test_guest_server_resets(self):
        # The guest resets at once, often before a relay has started: no
        # relay path to see in the logs.
        self.relay_path_unchecked = "the reset may come before the relay starts"
        port = free_port()
        srv = self.lr.guest_server("rst", "0.0.0.0", port)
        self.lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        s = None
        try:
            # The relayed RST can be so quick that it lands while connect()
            # is still returning: a reset there is the same outcome.
            with self.assertRaises(ConnectionResetError, msg="host client did not see the guest's reset"):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                b = s.recv(100)
                self.fail("clean EOF/data %r instead of a reset" % b)
        except socket.timeout:
            self.fail("host client hung instead of seeing the guest's reset")
        finally:
            if s is not None:
                s.close()
        srv.wait_event("reset_sent")

    def test_host_client_resets(self):
        port = free_port()
        srv = self.lr.guest_server("recvreport", "0.0.0.0", port)
        self.lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"some bytes")
        srv.wait_event("data", timeout=5)  # the relay is established end to end
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            evs = [e for e in srv.events() if e["event"] in ("reset", "eof", "error")]
            if evs:
                break
            time.sleep(0.01)
        self.assertTrue(evs, "guest server saw nothing within 5 s of the host client's reset")
        self.assertEqual(evs[0]["event"], "reset", "guest server saw %s, not a reset" % evs[0])

    def test_guest_refuses(self):
        """The listener closes; a client that reaches the stand-in before the
        agent notices (scan interval) must get a reset or refusal, never a hang."""
        port = free_port()
        srv = self.lr.guest_server("closable", "0.0.0.0", port, stdin=True)
        self.lr.wait_port("0.0.0.0:%d" % port, "forwarding")
        srv.send("close")
        srv.wait_event("closed")
        s = socket.socket()
        s.settimeout(5)
        outcome = None
        try:
            s.connect(("127.0.0.1", port))
            b = s.recv(100)
            outcome = "eof" if not b else "data"
        except ConnectionRefusedError:
            outcome = "refused"  # stand-in already gone: also correct
        except ConnectionResetError:
            outcome = "reset"
        except socket.timeout:
            outcome = "hang"
        finally:
            s.close()
        print("refusal outcome: " + outcome, file=sys.stderr)
        self.assertIn(outcome, ("reset", "refused"))


if __name__ == "__main__":
    unittest.main()
