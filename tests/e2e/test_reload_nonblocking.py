"""A reload never stalls the event loop (issue 17 item 4): a reload whose
new [guest] section names a namespace another lorelayd holds (its lock
taken) is refused at once, and connections through the running guest keep
their round trip under 50 ms the whole time. Before, the loop thread slept
up to 3 s waiting for the lock, and every connection through every guest
waited with it.

Likewise a reload that adds a guest whose namespace does not exist yet:
lorelayd creates it (no fork, no waitpid on the loop thread: netns.c) while
round trips through the running guest stay under 50 ms, and the new guest
comes up and forwards."""

import fcntl
import os
import threading
import time
import unittest

from lrharness import LorelayTestCase, MultiLorelay, free_ports, poll


def section(name, ns, extra=""):
    return "[guest %s]\nnetns = %s\n%s\n" % (name, ns, extra)


class ReloadNeverBlocks(LorelayTestCase):
    START = False

    def start_guest_g(self, tag, port):
        """A lorelayd with two namespace names, serving the first as guest
        g, whose banner server on `port` answers through it: (lorelayd,
        g's namespace, the other name)."""
        lr = self.lr = MultiLorelay(2, n_args=0, tag=tag)
        running, other = lr.names
        lr.write_config(section("g", running))
        lr.start(wait=False)
        lr.wait_guests(["g"])
        lr.guest_server("banner", "0.0.0.0", port, "tag=g", ns=running)
        lr.wait_port("0.0.0.0:%d" % port, "forwarding", name="g")
        self.assertBanner("127.0.0.1", port, b"guest:g\n")
        return lr, running, other

    def reload_during_round_trips(self, lr, port, config):
        """Banner round trips through guest g on `port`, every 5 ms, from
        before until after a reload to `config`: (reload output, its
        seconds, round trips made, the slowest in seconds). A positive
        event first: round trips are flowing before the reload starts."""
        worst, count, stop = [0.0], [0], threading.Event()

        def round_trips():
            while not stop.is_set():
                t = time.monotonic()
                self.assertBanner("127.0.0.1", port, b"guest:g\n")
                worst[0] = max(worst[0], time.monotonic() - t)
                count[0] += 1
                time.sleep(0.005)

        th = threading.Thread(target=round_trips, daemon=True)
        th.start()
        ok, _ = poll(lambda: count[0] >= 5, 5.0)
        self.assertTrue(ok, "no round trip through guest g")
        lr.write_config(config)
        t0 = time.monotonic()
        out = lr.reload()
        took = time.monotonic() - t0
        n_before = count[0]
        ok, _ = poll(lambda: count[0] >= n_before + 5, 5.0)
        stop.set()
        th.join(10)
        self.assertTrue(ok, "round trips stopped after the reload")
        return out, took, count[0], worst[0]

    def test_locked_namespace_refused_at_once(self):
        p = free_ports(1)[0]
        lr, running, locked = self.start_guest_g("lrb", p)

        # Another lorelayd serves `locked`: hold its lock as that one would.
        lock_path = "/run/lorelay/netns-%s.lock" % locked
        os.makedirs("/run/lorelay", exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.unlink, lock_path)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, b"4242\n", 0)

        out, took, count, worst = self.reload_during_round_trips(
            lr, p, section("g", running) + section("z", locked))
        self.assertIn("was not applied", out)
        self.assertIn("already served by another lorelayd (pid 4242)", out)
        print("reload refused in %.0f ms; %d round trips through guest g, the slowest %.1f ms"
              % (took * 1000, count, worst * 1000))
        self.assertLess(took, 1.0, "the reload waited for the lock")
        self.assertLess(worst, 0.050, "a round trip through guest g took %.0f ms during the reload"
                        % (worst * 1000))
        st = lr.status()
        self.assertEqual([g["name"] for g in st["guests"]], ["g"])
        self.assertFalse(st["config"]["last_reload"]["ok"])

    def test_new_namespace_created_without_stall(self):
        p, q = free_ports(2)
        lr, running, fresh = self.start_guest_g("lrc", p)
        self.assertFalse(os.path.exists("/run/netns/" + fresh), "namespace exists already")

        out, took, count, worst = self.reload_during_round_trips(
            lr, p, section("g", running) + section("z", fresh))
        self.assertNotIn("was not applied", out)
        print("reload creating namespace %s in %.0f ms; %d round trips through guest g, the "
              "slowest %.1f ms" % (fresh, took * 1000, count, worst * 1000))
        self.assertLess(worst, 0.050, "a round trip through guest g took %.0f ms during the reload"
                        % (worst * 1000))
        # The namespace lorelayd made is a real one, with lo up: the new
        # guest connects and forwards.
        self.assertTrue(os.path.exists("/run/netns/" + fresh))
        lr.wait_guests(["g", "z"])
        lr.guest_server("banner", "0.0.0.0", q, "tag=z", ns=fresh)
        lr.wait_port("0.0.0.0:%d" % q, "forwarding", name="z")
        self.assertBanner("127.0.0.1", q, b"guest:z\n")
        self.assertBanner("127.0.0.1", p, b"guest:g\n")


if __name__ == "__main__":
    unittest.main()
