#!/usr/bin/env python3
"""Tiny TCP servers and clients for the two benchmarks no packaged tool
covers well: new connections per second, and many idle connections.

Kept separate from lorelay_bench.py because the servers run inside the
guest namespace (`ip netns exec NS python3 loadgen.py serve-...`) and the
clients on the host, each as its own process, so that neither competes with
the driver for the GIL. Stdlib only. Every loop is bounded in time or count.

  serve-close PORT            accept, send one byte, close (forever; killed by the driver)
  serve-hold PORT N           accept up to N connections, echo one byte on each,
                              keep them open; prints "held K" after each 500 and at N
  connrate HOST PORT SECS     connect, read the byte and EOF, close, for SECS seconds;
                              prints "ok N err M"
  hold HOST PORT N TIMEOUT    open N connections, send a byte, read it back on each;
                              prints "ready N", then holds them until stdin closes
"""

import os
import resource
import selectors
import socket
import sys
import time


def raise_nofile(want):
    """Raise the soft fd limit to min(hard, want): 5000 connections need
    more than the common default soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(hard, want)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(4096)
    return s


def serve_close(port):
    s = listener(port)
    print("listening", flush=True)
    while True:
        try:
            c, _ = s.accept()
        except OSError:
            continue
        try:
            c.send(b"x")
        except OSError:
            pass
        c.close()


def serve_hold(port, n):
    raise_nofile(n + 100)
    s = listener(port)
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ, None)
    held = []
    print("listening", flush=True)
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data is None:
                while len(held) < n:
                    try:
                        c, _ = s.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, "conn")
                    held.append(c)
                    if len(held) % 500 == 0 or len(held) == n:
                        print("held %d" % len(held), flush=True)
            else:
                c = key.fileobj
                try:
                    b = c.recv(64)
                except OSError:
                    b = b""
                if b:
                    try:
                        c.send(b)
                    except OSError:
                        pass
                else:
                    sel.unregister(c)
                    c.close()
                    held.remove(c)


def connrate(host, port, secs):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    ok = err = 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.settimeout(2.0)
        try:
            c.connect((host, port))
            data = b""
            while True:
                b = c.recv(16)
                if not b:
                    break
                data += b
            if data == b"x":
                ok += 1
            else:
                err += 1
        except OSError:
            err += 1
        finally:
            c.close()
    print("ok %d err %d" % (ok, err), flush=True)


def hold(host, port, n, timeout):
    raise_nofile(n + 100)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    conns = []
    try:
        for _ in range(n):
            if time.monotonic() > deadline:
                break
            c = socket.socket(fam, socket.SOCK_STREAM)
            c.settimeout(5.0)
            c.connect((host, port))
            c.sendall(b"p")
            if c.recv(1) != b"p":
                raise OSError("echo failed on connection %d" % (len(conns) + 1))
            conns.append(c)
    except OSError as e:
        print("error after %d connections: %s" % (len(conns), e), flush=True)
    print("ready %d" % len(conns), flush=True)
    sys.stdin.read()  # held until the driver closes our stdin
    for c in conns:
        c.close()


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    mode, args = argv[1], argv[2:]
    try:
        if mode == "serve-close" and len(args) == 1:
            serve_close(int(args[0]))
        elif mode == "serve-hold" and len(args) == 2:
            serve_hold(int(args[0]), int(args[1]))
        elif mode == "connrate" and len(args) == 3:
            connrate(args[0], int(args[1]), float(args[2]))
        elif mode == "hold" and len(args) == 4:
            hold(args[0], int(args[1]), int(args[2]), float(args[3]))
        else:
            print("loadgen: bad arguments: %s" % " ".join(argv[1:]), file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv))
