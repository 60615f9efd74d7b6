"""Small guest-side servers for the end-to-end tests, run inside a test's
network namespace with `ip netns exec`.

    guestsrv.py MODE HOST PORT [key=value ...]

Each mode listens on HOST:PORT, prints {"event": "ready", ...} once listen()
returned, and reports what it saw as JSON lines on stdout, so the test on
the host side can assert on what the guest server actually received (a
relay that drops a byte or turns a reset into a clean close must fail).
Options: v6only=0|1 for IPv6 listeners (set explicitly, never left to the
sysctl), tag=TEXT for the banner, size=N and seed=N for bulk.

Stdlib only; every blocking call has a timeout so a broken relay shows up
as a reported error, not a hung test.
"""

import hashlib
import json
import random
import select
import socket
import struct
import sys
import time

TIMEOUT = 60.0


def emit(**kv):
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


def pattern(seed, size):
    """Deterministic pseudo-random bytes; the host regenerates the same."""
    return random.Random(seed).randbytes(size)


def listen(host, port, opts):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    if fam == socket.AF_INET6 and "v6only" in opts:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(opts["v6only"]))
    s.bind((host, port))
    s.listen(64)
    return s


def recv_all(c):
    h = hashlib.sha256()
    n = 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            return n, h.hexdigest()
        h.update(b)
        n += len(b)


def mode_banner(ls, opts):
    """Sends b"guest:TAG\\n" to every client and closes cleanly."""
    tag = opts.get("tag", "x")
    while True:
        c, peer = ls.accept()
        c.settimeout(TIMEOUT)
        try:
            c.sendall(("guest:%s\n" % tag).encode())
        except OSError as e:
            emit(event="send_error", error=repr(e))
        c.close()
        emit(event="served", peer=str(peer[0]))


def mode_bulk(ls, opts):
    """Reads until EOF, then sends size bytes of pattern(seed) and closes."""
    size = int(opts.get("size", 64 << 20))
    seed = int(opts.get("seed", 2))
    while True:
        c, _ = ls.accept()
        c.settimeout(TIMEOUT)
        try:
            n, digest = recv_all(c)
            emit(event="received", bytes=n, sha256=digest)
            data = pattern(seed, size)
            c.sendall(data)
            emit(event="sent", bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
            c.shutdown(socket.SHUT_WR)
            # Wait for the client's close so our FIN is not raced by an RST.
            c.recv(1)
        except OSError as e:
            emit(event="error", error=repr(e))
        c.close()


def mode_halfreply(ls, opts):
    """Client half-closes first: read to EOF, then answer with what came."""
    while True:
        c, _ = ls.accept()
        c.settimeout(TIMEOUT)
        try:
            n, digest = recv_all(c)
            emit(event="received", bytes=n, sha256=digest)
            c.sendall(("got %d %s\n" % (n, digest)).encode())
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
        except OSError as e:
            emit(event="error", error=repr(e))
        c.close()


def mode_halffirst(ls, opts):
    """Server half-closes first: banner, SHUT_WR, then keep reading to EOF."""
    while True:
        c, _ = ls.accept()
        c.settimeout(TIMEOUT)
        try:
            c.sendall(b"banner-then-fin\n")
            c.shutdown(socket.SHUT_WR)
            emit(event="shut_wr")
            n, digest = recv_all(c)
            emit(event="received", bytes=n, sha256=digest)
        except OSError as e:
            emit(event="error", error=repr(e))
        c.close()


def mode_sendclose(ls, opts):
    """Sends size bytes of pattern(seed) and closes at once, as an HTTP/1.0
    server does after its reply: the client must see every byte, then EOF."""
    size = int(opts.get("size", 100000))
    seed = int(opts.get("seed", 3))
    data = pattern(seed, size)
    while True:
        c, _ = ls.accept()
        c.settimeout(TIMEOUT)
        try:
            c.sendall(data)
            emit(event="sent", bytes=len(data))
        except OSError as e:
            emit(event="error", error=repr(e))
        c.close()
        emit(event="closed")


def mode_rst(ls, opts):
    """Accepts and resets at once (SO_LINGER {1, 0})."""
    while True:
        c, _ = ls.accept()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        emit(event="reset_sent")


def mode_recvreport(ls, opts):
    """Reads until EOF or error and says which: the host-side reset test."""
    while True:
        c, _ = ls.accept()
        c.settimeout(TIMEOUT)
        emit(event="accepted")
        total = 0
        try:
            while True:
                b = c.recv(65536)
                if not b:
                    emit(event="eof", bytes=total)
                    break
                total += len(b)
                emit(event="data", bytes=total)
        except ConnectionResetError as e:
            emit(event="reset", bytes=total, error=repr(e))
        except OSError as e:
            emit(event="error", bytes=total, error=repr(e))
        c.close()


def mode_closable(ls, opts):
    """Listens until told "close" on stdin, then closes the listener without
    ever accepting (queued connections get reset by the kernel)."""
    emit(event="waiting")
    line = sys.stdin.readline()
    if line.strip() == "close":
        ls.close()
        emit(event="closed")
    time.sleep(TIMEOUT)


def mode_detect(_ls, opts):
    """Detection benchmark: one long-lived process. Commands on stdin:
    "listen HOST PORT" -> listen, print the CLOCK_MONOTONIC times right
    before (t0) and right after (t) listen(); "bind HOST PORT" -> the same
    for a UDP socket's bind(); "close" -> close every
    listener, with the times before (t0) and after (t) the close() calls;
    "quit". CLOCK_MONOTONIC is shared across network namespaces, so host and
    guest times compare."""
    listeners = []
    while True:
        r, _, _ = select.select([sys.stdin], [], [], TIMEOUT * 10)
        if not r:
            return
        line = sys.stdin.readline()
        if not line:
            return
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "listen":
            host, port = parts[1], int(parts[2])
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.bind((host, port))
            t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
            s.listen(16)
            t = time.clock_gettime(time.CLOCK_MONOTONIC)
            listeners.append(s)
            emit(event="listening", port=port, t=t, t0=t0)
        elif parts[0] == "bind":  # a UDP server's socket: bind() is all it does
            host, port = parts[1], int(parts[2])
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM)
            t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
            s.bind((host, port))
            t = time.clock_gettime(time.CLOCK_MONOTONIC)
            listeners.append(s)
            emit(event="listening", port=port, t=t, t0=t0)
        elif parts[0] == "close":
            t0 = time.clock_gettime(time.CLOCK_MONOTONIC)
            for s in listeners:
                s.close()
            listeners = []
            emit(event="closed", t=time.clock_gettime(time.CLOCK_MONOTONIC), t0=t0)
        elif parts[0] == "quit":
            return


def listen_udp(host, port, opts):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6 and "v6only" in opts:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(opts["v6only"]))
    if opts.get("reuse") == "1":  # share the port with a server that sets it too
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((host, port))
    return s


def mode_udpecho(s, opts):
    """Echoes every datagram to its sender, byte for byte; "peers" on stdin
    (or quit) reports how many distinct sender addresses it saw. stdin=0:
    no commands, serve until killed."""
    peers = set()
    s.setblocking(False)
    watch = [s] if opts.get("stdin") == "0" else [s, sys.stdin]
    while True:
        r, _, _ = select.select(watch, [], [], TIMEOUT)
        if sys.stdin in r:
            line = sys.stdin.readline()
            if not line or line.strip() == "quit":
                return
            if line.strip() == "peers":
                emit(event="peers", n=len(peers))
            continue
        while True:
            try:
                data, peer = s.recvfrom(65536)
            except BlockingIOError:
                break
            peers.add(peer)
            try:
                s.sendto(data, peer)
            except OSError as e:
                emit(event="send-error", error=str(e))


MODES = {
    "banner": mode_banner,
    "bulk": mode_bulk,
    "halfreply": mode_halfreply,
    "halffirst": mode_halffirst,
    "sendclose": mode_sendclose,
    "rst": mode_rst,
    "recvreport": mode_recvreport,
    "closable": mode_closable,
    "detect": mode_detect,
    "udpecho": mode_udpecho,
}


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in MODES:
        sys.stderr.write("usage: guestsrv.py {%s} HOST PORT [key=value...]\n" % "|".join(MODES))
        return 2
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    opts = dict(a.split("=", 1) for a in sys.argv[4:])
    ls = None
    if mode.startswith("udp"):
        ls = listen_udp(host, port, opts)
        emit(event="ready", host=host, port=ls.getsockname()[1])
    elif mode != "detect":
        ls = listen(host, port, opts)
        emit(event="ready", host=host, port=ls.getsockname()[1])
    else:
        emit(event="ready")
    try:
        MODES[mode](ls, opts)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
