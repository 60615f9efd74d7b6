"""Guest-side load servers for the fault-injection tests, run inside a test's
namespace with `ip netns exec` (like guestsrv.py, whose JSON-line protocol
they share: {"event": "ready"} once listening, then events on stdout).

    stress_srv.py MODE HOST PORT [key=value ...]

    sink       reads and discards; reports how each connection ended
    source     sends size bytes (default 1 GiB) to each client, then closes
    nonreader  accepts and never reads (the client's sends must back up)
    echo       asyncio echo for thousands of concurrent clients
    duplex     one client: sends size bytes of the shared pattern while
               receiving what comes; reports both with their sha256
    churn      (HOST PORT ignored) n bind/listen/close cycles on random
               ports in lo..hi, then listens on the `final` ports and waits

Every mode is bounded: a connection idle for `timeout` seconds (default 60)
is dropped, and the process exits after `life` seconds (default 300).
Stdlib only.
"""

import asyncio
import hashlib
import json
import random
import resource
import socket
import struct
import sys
import threading
import time

CHUNK = 1 << 20


def emit(**kv):
    kv.setdefault("t", time.clock_gettime(time.CLOCK_MONOTONIC))
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


def raise_nofile():
    s, h = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))


def listen(host, port, backlog=1024):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host, port))
    s.listen(backlog)
    return s


def pattern_chunks(total, seed=7):
    """The shared bulk pattern: a 1 MiB pseudo-random block whose first 8
    bytes carry the chunk number, so a reordered or repeated chunk changes
    the digest. Yields memoryviews of one reused buffer."""
    block = bytearray(random.Random(seed).randbytes(CHUNK))
    i = 0
    sent = 0
    while sent < total:
        struct.pack_into(">Q", block, 0, i)
        n = min(CHUNK, total - sent)
        yield memoryview(block)[:n]
        sent += n
        i += 1


def serve_threads(ls, handler, opts):
    timeout = float(opts.get("timeout", 60))
    n = 0
    while True:
        c, _ = ls.accept()
        c.settimeout(timeout)
        n += 1
        threading.Thread(target=handler, args=(c, n, opts), daemon=True).start()


def h_sink(c, n, opts):
    total = 0
    how = "eof"
    try:
        while True:
            b = c.recv(CHUNK)
            if not b:
                break
            total += len(b)
    except ConnectionResetError:
        how = "reset"
    except socket.timeout:
        how = "timeout"
    except OSError as e:
        how = "error: %s" % e
    emit(event="sink_end", conn=n, bytes=total, how=how)
    c.close()


def h_source(c, n, opts):
    size = int(opts.get("size", 1 << 30))
    sent = 0
    how = "done"
    try:
        for chunk in pattern_chunks(size):
            c.sendall(chunk)
            sent += len(chunk)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
    except ConnectionResetError:
        how = "reset"
    except BrokenPipeError:
        how = "pipe"
    except socket.timeout:
        how = "timeout"
    except OSError as e:
        how = "error: %s" % e
    emit(event="source_end", conn=n, bytes=sent, how=how)
    c.close()


HELD = []


def h_nonreader(c, n, opts):
    HELD.append(c)
    emit(event="accepted", conn=n)


def h_duplex(c, n, opts):
    size = int(opts.get("size", 1 << 30))
    res = {}

    def rx():
        h = hashlib.sha256()
        total = 0
        buf = bytearray(CHUNK)
        try:
            while True:
                k = c.recv_into(buf)
                if not k:
                    break
                h.update(memoryview(buf)[:k])
                total += k
            res["rx"] = (total, h.hexdigest(), "eof")
        except OSError as e:
            res["rx"] = (total, h.hexdigest(), repr(e))

    t = threading.Thread(target=rx)
    t.start()
    sent = 0
    how = "done"
    th = hashlib.sha256()
    try:
        for chunk in pattern_chunks(size):
            th.update(chunk)
            c.sendall(chunk)
            sent += len(chunk)
        c.shutdown(socket.SHUT_WR)
    except OSError as e:
        how = repr(e)
    emit(event="sent", conn=n, bytes=sent, sha256=th.hexdigest(), how=how)
    t.join()
    total, digest, rhow = res["rx"]
    emit(event="received", conn=n, bytes=total, sha256=digest, how=rhow)
    c.close()


def mode_echo(host, port, opts):
    async def handle(r, w):
        try:
            while True:
                d = await asyncio.wait_for(r.read(65536), float(opts.get("timeout", 60)))
                if not d:
                    break
                w.write(d)
                await w.drain()
        except (ConnectionError, asyncio.TimeoutError):
            pass
        w.close()

    async def main():
        ls = listen(host, port, backlog=4096)
        srv = await asyncio.start_server(handle, sock=ls, backlog=4096)
        emit(event="ready", port=port)
        async with srv:
            await srv.serve_forever()
    asyncio.run(main())


def mode_churn(opts):
    n = int(opts.get("n", 1000))
    lo, hi = int(opts.get("lo", 20000)), int(opts.get("hi", 29999))
    final = [int(p) for p in opts.get("final", "").split(",") if p]
    pool_max = int(opts.get("pool", 40))
    pause = float(opts.get("pause", 0.003))
    avoid = set(final)
    emit(event="ready")
    pool = []
    cycles = 0
    t0 = time.monotonic()
    rnd = random.Random()
    while cycles < n:
        p = rnd.randint(lo, hi)
        if p in avoid:
            continue
        host = rnd.choice(("0.0.0.0", "127.0.0.1", "::"))
        fam = socket.AF_INET6 if host == "::" else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind((host, p))
            s.listen(8)
        except OSError:
            s.close()
            continue
        pool.append(s)
        cycles += 1
        if len(pool) > pool_max or rnd.random() < 0.3:
            pool.pop(rnd.randrange(len(pool))).close()
        time.sleep(pause)
    for s in pool:
        s.close()
    churn_s = time.monotonic() - t0
    finals = [listen("0.0.0.0", p, backlog=16) for p in final]
    emit(event="final", cycles=cycles, churn_seconds=round(churn_s, 3), ports=final)
    time.sleep(float(opts.get("life", 300)))
    for s in finals:
        s.close()


MODES = {"sink": h_sink, "source": h_source, "nonreader": h_nonreader, "duplex": h_duplex}


def main():
    if len(sys.argv) < 4:
        sys.stderr.write("usage: stress_srv.py MODE HOST PORT [key=value...]\n")
        return 2
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opts = dict(a.split("=", 1) for a in sys.argv[4:])
    raise_nofile()
    life = float(opts.get("life", 300))
    killer = threading.Timer(life, lambda: __import__("os")._exit(0))
    killer.daemon = True
    killer.start()
    if mode == "echo":
        mode_echo(host, port, opts)
        return 0
    if mode == "churn":
        mode_churn(opts)
        return 0
    if mode not in MODES:
        sys.stderr.write("unknown mode %s\n" % mode)
        return 2
    ls = listen(host, port)
    emit(event="ready", port=port)
    try:
        serve_threads(ls, MODES[mode], opts)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
