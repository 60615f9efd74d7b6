"""Many concurrent connections under a low soft fd limit: systemd starts
services with a soft RLIMIT_NOFILE of 1024, and each relayed connection
costs lorelayd two fds (client + transport) and the agent two more. The
daemons must raise their soft limit, not stall at ~500 connections."""

import os
import resource
import socket
import sys
import time
import unittest

from lrharness import LorelayTestCase, Lorelay, free_ports, skip_or_fail

N = 600  # > 1024 / 2: fails if lorelayd keeps a soft limit of 1024

ECHO = r'''
import asyncio, json, sys
async def handle(r, w):
    try:
        while True:
            d = await r.read(65536)
            if not d: break
            w.write(d); await w.drain()
    except ConnectionError:
        pass
    w.close()
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[1]), backlog=1024)
    print(json.dumps({"event": "ready"}), flush=True)
    async with srv: await srv.serve_forever()
import resource
s, h = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
asyncio.run(main())
'''


class FdLimit(LorelayTestCase):
    START = False

    def test_many_connections_under_soft_limit_1024(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < 4 * N:
            # Root (which the e2e tests need anyway) may raise its hard limit.
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, 4 * N))
                hard = 4 * N
            except (ValueError, OSError) as e:
                skip_or_fail(self, "hard fd limit %d is below the %d this test needs, and "
                             "raising it failed: %s" % (hard, 4 * N, e))
        port, = free_ports(1)
        self.lr.cleanup()
        self.lr = Lorelay()
        lr = self.lr
        # lorelayd (and, through it, lorelay-init and the agent) start with
        # systemd's soft limit; this test process keeps enough for N clients.
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        try:
            lr.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        srv = lr.spawn([sys.executable, "-u", "-c", ECHO, str(port)], "echo")
        srv.wait_event("ready", timeout=10)
        lr.wait_port("0.0.0.0:%d" % port, "forwarding")

        socks = []
        deadline = time.monotonic() + 60
        try:
            for i in range(N):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                socks.append(s)
                s.sendall(b"%05d" % i)
            for i, s in enumerate(socks):
                got = b""
                while len(got) < 5 and time.monotonic() < deadline:
                    d = s.recv(5 - len(got))
                    if not d:
                        break
                    got += d
                self.assertEqual(got, b"%05d" % i, "connection %d of %d not relayed" % (i + 1, N))
            st = lr.port("0.0.0.0:%d" % port)
            self.assertEqual(st["active"], N)
        finally:
            for s in socks:
                s.close()


if __name__ == "__main__":
    unittest.main()
