#!/usr/bin/env python3
"""Stateful fuzz: a scripted hostile agent against lorelayd (ASan build).

    stateful_agent.py [--bin-dir DIR] [--seconds N] [--seed N] [--keep]

lorelayd (from the linux-asan build) is started with
`--guest unix:AGENT --socket STATUS --log-level warn` and a private config,
and connects to this script, which plays the agent. The script answers the
preamble and HELLO, usually with a valid WELCOME, then for the given time
sends random sequences of valid, mutated and garbage frames of every type
on the control stream, answers the data and reverse streams lorelayd opens
(valid, refused, garbled, silent, or cut off), connects host clients to
the stand-ins lorelayd opens, asks the status endpoint (also with garbage
request lines), closes streams under lorelayd's feet, and accepts
lorelayd's reconnects. Everything lorelayd sends is decoded and checked
against what it was sent (a PONG echoes a PING we sent, a PORT_STATE names
a listener we reported, an OPEN a port we reported, an ATTACH an id we
asked for...).

The test fails if lorelayd dies, sends something malformed or unfounded,
stops answering its status endpoint, does not give valid JSON to
`lorelayctl status --json` at the end, does not stop cleanly on SIGTERM,
or if AddressSanitizer, LeakSanitizer or UBSan reported anything.

Traffic stays on this machine: Unix sockets, and TCP on 127.0.0.1 and ::1
only. Listener addresses in the frames may be anything (lorelayd binds
loopback stand-ins whatever the guest address), but every port lorelayd
could bind a stand-in for is forced into one 256-port block at or above
20000, picked at random below the ephemeral range (see Shadow), so the
run does not take ports other tests use. No root needed.

Every frame is built and checked with tests/lrpeer.py (strict decoding:
what lr_proto.c refuses, lrpeer refuses too), the same protocol library
the e2e tests use, written from docs/protocol.md rather than from the C
code. lorelayd runs without a key (protocol 2's auth blocks are empty),
so the hostile side also plays a keyed agent, sends CHALLENGE, BUSY and
auth blocks nobody asked for.

The random sequence is seeded; the seed is printed, and --seed replays the
same choices (timing still varies). Exit status: 0 pass, 1 fail, 77 skip
(the ASan build is missing and CI is not set; in CI that is a failure).
"""

import argparse
import errno
import glob
import ipaddress
import json
import os
import random
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: lrci, lrpeer

import lrci  # noqa: E402
import lrpeer as P  # noqa: E402

NAME = "fuzz_stateful_agent"
SANITIZER_MARKS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer", b"runtime error:",
                   b"SUMMARY: UndefinedBehaviorSanitizer")


def log(msg):
    print("%s: %s" % (NAME, msg), flush=True)


class Failure(Exception):
    pass


# ------------------------------------------------------------------ ports

def _bind_ok(family, addr, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def have_ipv6():
    return socket.has_ipv6 and _bind_ok(socket.AF_INET6, "::1", 0)


def port_free(port, v6):
    return _bind_ok(socket.AF_INET, "127.0.0.1", port) and (
        not v6 or _bind_ok(socket.AF_INET6, "::1", port))


def pick_block(rng, v6):
    """A 256-port block [hi*256, hi*256+255] at or above 20000 and below the
    ephemeral range whose ports we use by name are free right now."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        eph = 32768
    lo_hi = (20000 + 255) // 256          # first block starting >= 20000
    hi_hi = max(lo_hi, eph // 256 - 1)    # last block ending below the ephemeral range
    for _ in range(100):
        hi = rng.randint(lo_hi, hi_hi)
        base = hi * 256
        named = [base + i for i in range(0, 32)] + [base + i for i in range(248, 252)]
        if all(port_free(p, v6) for p in named):
            return hi
    raise Failure("no free 256-port block between 20000 and %d" % eph)


# ------------------------------------------------------------------ shadow

class Shadow:
    """Follows the bytes we send on a control stream exactly the way
    lorelayd frames them (preamble, then header + payload up to 4096), and
    on the way out:
      - forces the high byte of every LISTENER_ADD's port to the run's
        block, whatever the rest of the frame holds: it is the only frame
        that makes lorelayd bind a port, and forcing one byte needs no look
        ahead, so a frame split across sends or built by mutation is
        covered as well;
      - records every whole frame, so what lorelayd answers can be checked
        against what it was really sent (mutations included).
    A bad preamble or an oversized length is where lorelayd drops the
    stream; the shadow stops there too."""

    def __init__(self, block_hi, on_frame):
        self.block_hi = block_hi
        self.on_frame = on_frame
        self.pre = b""
        self.hdr = b""
        self.type = None
        self.need = 0
        self.payload = bytearray()
        self.dead = False

    def filter(self, data):
        out = bytearray(data)
        i = 0
        while i < len(out) and not self.dead:
            if len(self.pre) < 8:
                take = min(8 - len(self.pre), len(out) - i)
                self.pre += bytes(out[i:i + take])
                i += take
                if len(self.pre) == 8:
                    try:
                        version, kind = P.decode_preamble(self.pre)
                        self.dead = version != P.PROTO_VERSION or kind not in (1, 2, 3)
                    except P.ProtoError:
                        self.dead = True
                continue
            if self.type is None:
                take = min(P.HDR_LEN - len(self.hdr), len(out) - i)
                self.hdr += bytes(out[i:i + take])
                i += take
                if len(self.hdr) == P.HDR_LEN:
                    t, _flags, n = struct.unpack(">HHI", self.hdr)
                    self.hdr = b""
                    if n > P.MAX_PAYLOAD:
                        self.dead = True
                        continue
                    self.type, self.need, self.payload = t, n, bytearray()
                    if n == 0:
                        self._done()
                continue
            take = min(self.need - len(self.payload), len(out) - i)
            if self.type == P.LISTENER_ADD and len(self.payload) <= 2 < len(self.payload) + take:
                out[i + 2 - len(self.payload)] = self.block_hi
            self.payload += out[i:i + take]
            i += take
            if len(self.payload) == self.need:
                self._done()
        return bytes(out)

    def _done(self):
        t, p = self.type, bytes(self.payload)
        self.type = None
        self.on_frame(t, p)


# ------------------------------------------------------------------ streams

class Stream:
    """One transport stream lorelayd opened to us (control, data or reverse)."""

    def __init__(self, sock, now):
        self.sock = sock
        self.inbuf = bytearray()   # lorelayd's preamble, until it is whole
        self.parser = P.FrameParser()
        self.out = bytearray()
        self.later = []            # [(due, bytes)]: pieces of a slowly sent frame
        self.kind = None           # lorelayd's preamble kind once read
        self.state = "preamble"    # preamble, first, welcomed, answered, relay, silent, dead
        self.shadow = None
        self.opened = now
        self.close_at = None       # close by ourselves at this time
        self.reset = False         # close with an abrupt full close
        self.echo = False          # relay phase: echo what arrives

    def send(self, data, now=None, delay=0.0):
        immediate = not (delay and now is not None) and not self.later
        if immediate and len(self.out) >= (1 << 20):
            # lorelayd is not reading: this send is dropped whole, before
            # the shadow sees it. Dropping it after would cut the stream in
            # the middle of a frame, and lorelayd would frame what follows
            # differently from the shadow.
            return
        if self.shadow is not None:
            data = self.shadow.filter(data)
        if delay and now is not None:
            self.later.append((now + delay, data))
        elif self.later:
            # keep order behind pieces still waiting
            self.later.append((self.later[-1][0], data))
        else:
            self.out += data

    def fileno(self):
        return self.sock.fileno()


def listener_key(d):
    """A decoded listener as a set member: (family, flags, port, addr)."""
    return (d["family"], d["flags"], d["port"], d["addr"])


class Fuzz:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.errors = []
        self.stats = dict(ctl=0, data=0, reverse=0, actions=0, frames=0, clients=0,
                          status=0, pongs=0, port_states=0, reverse_fails=0, attaches=0,
                          opens=0, hostile_handshakes=0, stream_closes=0)
        # What lorelayd was really sent, across all control streams.
        self.pings = set()
        self.announced = set()     # (family, flags, port, addr) of decoded LISTENER_ADDs
        self.rev_ids = set()       # ids of decoded REVERSE_OPENs
        self.rev_ids_listed = set()
        self.stream_ids = []       # ids lorelayd gave its data streams (OPEN), the last 256
        self.stream_ids_seen = set()
        self.streams = []
        self.ctl = None
        self.clients = []          # host clients: [sock, close_at, connected]
        self.server_conns = []     # accepted by our host server (reverse target)

    # ---------------------------------------------------------- checks

    def fail(self, why):
        if len(self.errors) < 20:
            log("ERROR: " + why)
        self.errors.append(why)

    def on_shadow_frame(self, t, p):
        """A frame lorelayd will parse on a control stream, as it will see it."""
        if t not in P.MSG_NAMES:
            return
        try:
            d = P.decode(t, p, strict=True)
        except P.ProtoError:
            return
        if t == P.PING:
            self.pings.add(d["nonce"])
        elif t == P.LISTENER_ADD:
            self.announced.add(listener_key(d))
        elif t == P.REVERSE_OPEN:
            self.rev_ids.add(d["id"])
            if d["port"] in self.rev_ports:
                self.rev_ids_listed.add(d["id"])

    def check_from_host(self, st, t, p):
        """A frame lorelayd sent on a control stream after HELLO."""
        if t not in P.MSG_NAMES:
            return self.fail("lorelayd sent unknown frame type %d on a control stream" % t)
        try:
            d = P.decode(t, p, strict=True)
        except P.ProtoError as e:
            return self.fail("lorelayd sent a malformed %s: %s (%s)" %
                             (P.MSG_NAMES[t], e, p.hex()[:80]))
        if t == P.PING:
            st.send(P.frame(P.PONG, P.enc_ping(d["nonce"])))
        elif t == P.PONG:
            self.stats["pongs"] += 1
            if d["nonce"] not in self.pings:
                self.fail("PONG %#x answers no PING we sent" % d["nonce"])
        elif t == P.PORT_STATE:
            self.stats["port_states"] += 1
            key = listener_key(d["listener"])
            if key not in self.announced:
                near = sorted(k for k in self.announced if k[2] == key[2])[:6]
                self.fail("PORT_STATE for a listener never reported: %r (state %s; reported on "
                          "that port: %r)" % (key, d.get("state_name"), near))
        elif t == P.REVERSE_SET:
            if set(d["ports"]) != set(self.rev_ports) or len(d["ports"]) != len(self.rev_ports):
                self.fail("REVERSE_SET %r, configured %r" % (d["ports"], self.rev_ports))
            if d["flags"] != (P.REVERSE_IPV6 if self.v6 else 0):
                self.fail("REVERSE_SET flags %d" % d["flags"])
        elif t == P.REVERSE_FAIL:
            self.stats["reverse_fails"] += 1
            if d["id"] not in self.rev_ids:
                self.fail("REVERSE_FAIL for id %d, never asked for" % d["id"])
        elif t == P.STREAM_CLOSE:
            self.stats["stream_closes"] += 1
            if d["id"] not in self.stream_ids_seen:
                self.fail("STREAM_CLOSE for stream %d, which no OPEN or ATTACH named" % d["id"])
            if d["kind"] not in (P.CLOSE_FIN, P.CLOSE_RESET):
                self.fail("STREAM_CLOSE of kind %d" % d["kind"])
        else:
            self.fail("lorelayd sent %s on a control stream" % P.MSG_NAMES[t])

    # ---------------------------------------------------------- frames

    def rand_addr(self, family):
        r = self.rng.random()
        if family == 4:
            if r < 0.4:
                return "0.0.0.0"
            if r < 0.8:
                return "127.0.0.1"
            return str(ipaddress.IPv4Address(self.rng.getrandbits(32)))
        if r < 0.4:
            return "::"
        if r < 0.8:
            return "::1"
        return str(ipaddress.IPv6Address(self.rng.getrandbits(128)))

    def pool_port(self):
        return self.block + self.rng.randrange(32)

    def rand_listener(self, mtype):
        fam = self.rng.choice((4, 6))
        flags = 0 if fam == 4 else self.rng.choice((0, 0, P.LISTENER_V6ONLY))
        if mtype == P.LISTENER_DEL and self.announced and self.rng.random() < 0.7:
            fam, flags, port, addr = self.rng.choice(sorted(self.announced))
        else:
            port, addr = self.pool_port(), self.rand_addr(fam)
        return P.frame(mtype, P.enc_listener(addr, port, family=fam, flags=flags))

    def rand_text(self, maxlen=40):
        n = self.rng.randrange(maxlen + 1)
        return bytes(self.rng.randrange(32, 127) for _ in range(n))

    def rand_bytes(self, n):
        return bytes(self.rng.randrange(256) for _ in range(n))

    def rand_auth(self, none_ok=False):
        """An auth block lorelayd did not ask for (it has no key): mostly
        empty, else a keyed host's or agent's length or any length."""
        r = self.rng
        n = r.choice((0, 0, 0, P.AUTH_HOST_LEN, P.AUTH_AGENT_LEN, r.randrange(256)))
        if none_ok and n == 0 and r.random() < 0.5:
            return None   # OPEN_RESULT: no block at all
        return self.rand_bytes(n)

    def valid_frame(self, types=None):
        r = self.rng
        t = r.choice(types or (P.LISTENER_ADD, P.LISTENER_ADD, P.LISTENER_ADD, P.LISTENER_DEL,
                               P.LISTENER_DEL, P.SYNC_DONE, P.PING, P.PONG, P.WELCOME,
                               P.REVERSE_OPEN, P.REVERSE_OPEN, P.HELLO, P.PORT_STATE,
                               P.REVERSE_SET, P.REVERSE_FAIL, P.OPEN, P.OPEN_RESULT, P.ATTACH,
                               P.CHALLENGE, P.STREAM_CLOSE, P.STREAM_CLOSE))
        if t in (P.LISTENER_ADD, P.LISTENER_DEL):
            return self.rand_listener(t)
        if t == P.SYNC_DONE:
            return P.frame(P.SYNC_DONE)
        if t in (P.PING, P.PONG):
            return P.frame(t, P.enc_ping(r.getrandbits(64)))
        if t in (P.WELCOME, P.HELLO):
            return P.frame(t, P.enc_hello(self.rand_auth(), self.rand_text(60),
                                          self.rand_text(20)))
        if t == P.REVERSE_OPEN:
            port = r.choice(self.rev_ports) if r.random() < 0.6 else r.randrange(1, 65536)
            return P.frame(t, P.enc_reverse_open(r.getrandbits(32), r.choice((4, 6)), port))
        if t == P.PORT_STATE:
            return P.frame(t, P.enc_port_state(P.enc_listener("0.0.0.0", self.pool_port()),
                                               r.randrange(len(P.PORT_STATES)),
                                               r.randrange(65536)))
        if t == P.REVERSE_SET:
            return P.frame(t, P.enc_reverse_set([r.randrange(1, 65536)
                                                 for _ in range(r.randrange(5))]))
        if t == P.REVERSE_FAIL:
            return P.frame(t, P.enc_reverse_fail(r.getrandbits(32), r.randrange(9),
                                                 self.rand_text()))
        if t == P.OPEN:
            return P.frame(t, P.enc_open(r.choice((4, 6)), r.randrange(1, 65536),
                                         self.rand_auth()))
        if t == P.OPEN_RESULT:
            return P.frame(t, P.enc_open_result(r.randrange(9), self.rand_text(),
                                                self.rand_auth(none_ok=True)))
        if t == P.CHALLENGE:
            return P.frame(t, P.enc_challenge(self.rand_bytes(P.NONCE_LEN)))
        if t == P.STREAM_CLOSE:
            # Mostly streams lorelayd really opened (live or gone), with any
            # kind and count: a lying count, a reset, one this host never named.
            sid = (r.choice(self.stream_ids) if self.stream_ids and r.random() < 0.7
                   else r.randrange(1, 1 << 32))
            kind = r.choice((P.CLOSE_FIN, P.CLOSE_FIN, P.CLOSE_RESET, r.randrange(256)))
            nbytes = r.choice((0, r.randrange(1 << 16), r.getrandbits(64)))
            return P.frame(t, P.enc_stream_close(sid, kind, nbytes))
        return P.frame(P.ATTACH, P.enc_attach(r.getrandbits(32), self.rand_auth()))

    def mutate(self, frame):
        r = self.rng
        b = bytearray(frame)
        for _ in range(r.randrange(1, 4)):
            op = r.randrange(7)
            if op == 0 and b:                      # flip a bit
                i = r.randrange(len(b))
                b[i] ^= 1 << r.randrange(8)
            elif op == 1 and b:                    # replace a byte
                b[r.randrange(len(b))] = r.randrange(256)
            elif op == 2 and len(b) > 8:           # truncate the payload, header kept
                del b[r.randrange(8, len(b)):]
            elif op == 3 and len(b) > 8:           # truncate, header follows
                del b[r.randrange(8, len(b)):]
                b[4:8] = struct.pack(">I", len(b) - 8)
            elif op == 4:                          # append (a newer peer's fields)
                b += bytes(r.randrange(256) for _ in range(r.randrange(1, 16)))
                if r.random() < 0.5:
                    b[4:8] = struct.pack(">I", len(b) - 8)
            elif op == 5 and len(b) >= 8:          # lie about the length
                n = r.choice((0, 1, r.randrange(64), r.randrange(P.MAX_PAYLOAD + 1),
                              P.MAX_PAYLOAD + 1, 0xFFFFFFFF))
                b[4:8] = struct.pack(">I", n)
            elif op == 6 and len(b) >= 2:          # another type
                b[0:2] = struct.pack(">H", r.choice((r.randrange(40), r.randrange(65536))))
        return bytes(b)

    def garbage(self, maxlen=64):
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, maxlen)))

    # ---------------------------------------------------------- control stream

    def handshake(self, st, now):
        """lorelayd's HELLO arrived on a new control stream: answer it."""
        r = self.rng
        self.ctl = st
        st.shadow = Shadow(self.block_hi, self.on_shadow_frame)
        st.state = "welcomed"
        x = r.random()
        if x < 0.80:
            name = self.rand_text(30) or b"guest"
            # Mostly an agent that takes close notices (caps byte), so
            # lorelayd numbers its streams and sends STREAM_CLOSE.
            caps = bytes([P.CAP_CLOSE_NOTICE]) if r.random() < 0.8 else b""
            frames = P.preamble(P.KIND_CONTROL) + P.frame(
                P.WELCOME, P.enc_hello(b"", name, self.rand_text(10)) + caps)
            if r.random() < 0.2:   # slowly: a few bytes at a time
                k, due = r.randrange(1, 6), 0.0
                for i in range(0, len(frames), k):
                    due += 0.002
                    st.send(frames[i:i + k], now, due)
            else:
                st.send(frames)
            return
        self.stats["hostile_handshakes"] += 1
        st.state = "silent"
        choice = r.randrange(11)
        ctl = P.preamble(P.KIND_CONTROL)
        # lorelayd waits 5 s after a version, auth or key mismatch: rarely.
        if choice == 0:
            st.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        elif choice == 1 and r.random() < 0.15:   # an older or newer agent
            v = r.choice((1, 3))
            st.send(P.preamble(P.KIND_CONTROL, version=v) +
                    P.error_frame(P.ERR_VERSION, "version %d" % v))
        elif choice == 2 and r.random() < 0.15:
            st.send(ctl + P.error_frame(P.ERR_AUTH, "authentication failed"))
        elif choice == 3:
            st.send(ctl + P.error_frame(r.choice((P.ERR_PROTOCOL, P.ERR_BUSY)),
                                        self.rand_text()))
        elif choice == 4:
            st.send(ctl + self.valid_frame())
        elif choice == 5:
            st.send(ctl + self.garbage())
        elif choice == 6:
            st.send(P.preamble(r.randrange(256), flags=r.choice((0, r.randrange(256)))) +
                    P.welcome_frame())
        elif choice == 7:
            st.send(self.mutate(ctl + P.welcome_frame()))
        elif choice == 8 and r.random() < 0.15:   # a keyed agent: lorelayd has no key
            st.send(P.preamble(P.KIND_ANY, flags=P.PREAMBLE_KEYED) +
                    P.frame(P.CHALLENGE, P.enc_challenge(self.rand_bytes(P.NONCE_LEN))))
        elif choice == 9:   # a WELCOME with a MAC nobody asked for
            st.send(ctl + P.frame(P.WELCOME, P.enc_hello(self.rand_auth(), b"g", b"1")))
        else:
            st.close_at = now
            st.reset = r.random() < 0.5
            return
        st.close_at = now + r.choice((0.05, 0.3, 1.0, 6.0))

    def control_action(self, st, now):
        r = self.rng
        self.stats["actions"] += 1
        x = r.random()
        # Most actions keep the session going, so the port table, stand-ins
        # and connections build up; about one in six ends it.
        if x < 0.55:
            data = self.valid_frame()
        elif x < 0.70:
            data = b"".join(self.valid_frame((P.LISTENER_ADD, P.LISTENER_DEL))
                            for _ in range(r.randrange(2, 40)))
        elif x < 0.82:
            data = self.mutate(self.valid_frame())
        elif x < 0.87:
            data = P.frame(r.randrange(33, 65536), self.garbage(200))
        elif x < 0.89:
            data = self.garbage()
        elif x < 0.94:   # one frame in slow pieces
            f = self.valid_frame()
            t = 0.0
            for i in range(0, len(f), 3):
                t += r.choice((0.0, 0.001, 0.01))
                st.send(f[i:i + 3], now, t)
            self.stats["frames"] += 1
            return
        elif x < 0.955:
            data = P.preamble(P.KIND_CONTROL) + P.welcome_frame()   # a second preamble: garbage
        elif x < 0.97:
            data = P.error_frame(r.randrange(9), self.rand_text())
        elif x < 0.98:
            data = P.frame_header(P.PING, P.MAX_PAYLOAD + 1) + bytes(8)
        else:
            st.close_at = now
            st.reset = r.random() < 0.5
            return
        self.stats["frames"] += 1
        st.send(data)

    # ---------------------------------------------------------- data / reverse

    def answer_open(self, st, now):
        """Answer lorelayd's OPEN or ATTACH on a data or reverse stream."""
        r = self.rng
        x = r.random()
        pre = P.preamble(st.kind)
        st.state = "answered"
        if x < 0.55:
            st.send(pre + self.open_ok())
            if r.random() < 0.3:
                st.send(self.garbage(200))   # early relay bytes right behind the frame
            st.state = "relay"
            st.echo = r.random() < 0.8
            st.close_at = now + r.choice((0.05, 0.5, 2.0, 5.0))
            st.reset = r.random() < 0.3
            return
        if x < 0.70:
            st.send(pre + P.frame(P.OPEN_RESULT, P.enc_open_result(
                r.randrange(1, 9), self.rand_text(), self.rand_auth(none_ok=True))))
        elif x < 0.75:
            st.send(pre + P.error_frame(r.randrange(9), self.rand_text()))
        elif x < 0.83:
            st.send(pre + self.mutate(self.open_ok()))
        elif x < 0.87:
            st.send(self.mutate(pre) + self.open_ok())
        elif x < 0.91:
            st.send(pre + self.garbage())
        elif x < 0.94:
            f = pre + self.open_ok()
            k = r.randrange(1, len(f))
            st.send(f[:k])                                 # then nothing: a cut answer
        elif x < 0.97:
            st.state = "silent"                            # no answer: lorelayd times out
            st.close_at = now + 7.0
            return
        st.close_at = now + r.choice((0.0, 0.1, 1.0))
        st.reset = r.random() < 0.5

    def open_ok(self):
        """OPEN_RESULT ok: without an auth block, with an empty one, or
        with one a host without a key ignores."""
        return P.frame(P.OPEN_RESULT, P.enc_open_result(0, "", self.rand_auth(none_ok=True)))

    def on_first_frame(self, st, t, p, now):
        kind = {1: "control", 2: "data", 3: "reverse"}.get(st.kind, "kind-%d" % st.kind)
        try:
            if t not in P.MSG_NAMES:
                raise P.ProtoError("unknown frame type")
            d = P.decode(t, p, strict=True)
        except P.ProtoError as e:
            self.fail("lorelayd opened a %s stream with a bad %s frame: %s" %
                      (kind, P.MSG_NAMES.get(t, t), e))
            st.close_at = now
            return
        if t in (P.HELLO, P.OPEN, P.ATTACH) and d["token"]:
            self.fail("%s carries an auth block of %d bytes, no key was configured" %
                      (P.MSG_NAMES[t], len(d["token"])))
        if st.kind == P.KIND_CONTROL:
            if t != P.HELLO:
                self.fail("control stream opened with %s, not HELLO" % P.MSG_NAMES[t])
            self.stats["ctl"] += 1
            self.handshake(st, now)
        elif st.kind == P.KIND_DATA:
            self.stats["data"] += 1
            if t != P.OPEN:
                self.fail("data stream opened with %s, not OPEN" % P.MSG_NAMES[t])
            elif not any(a[0] in (4, 6) and a[2] == d["port"] for a in self.announced):
                self.fail("OPEN for port %d, which no LISTENER_ADD reported" % d["port"])
            self.stats["opens"] += 1
            if d.get("stream_id"):
                if d["stream_id"] in self.stream_ids_seen and d["stream_id"] in self.stream_ids:
                    self.fail("OPEN reuses stream id %d" % d["stream_id"])
                self.stream_ids_seen.add(d["stream_id"])
                self.stream_ids = (self.stream_ids + [d["stream_id"]])[-256:]
            self.answer_open(st, now)
        else:
            self.stats["reverse"] += 1
            if t != P.ATTACH:
                self.fail("reverse stream opened with %s, not ATTACH" % P.MSG_NAMES[t])
            elif d["id"] not in self.rev_ids_listed:
                self.fail("ATTACH for id %d, never asked for on a listed port" % d["id"])
            self.stats["attaches"] += 1
            if d.get("stream_id"):  # a reverse stream's close is noticed by the same id
                self.stream_ids_seen.add(d["stream_id"])
                self.stream_ids = (self.stream_ids + [d["stream_id"]])[-256:]
            self.answer_open(st, now)

    def on_readable(self, st, now):
        try:
            data = st.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            st.state = "dead"
            return
        if st.state == "relay":
            if st.echo:
                st.send(data)
            return
        if st.state in ("silent", "answered"):
            return
        if st.state == "preamble":
            st.inbuf += data
            if len(st.inbuf) < 8:
                return
            try:
                version, kind = P.decode_preamble(bytes(st.inbuf[:8]))
            except P.ProtoError as e:
                self.fail("lorelayd's preamble: %s" % e)
                st.state = "dead"
                return
            # Version 2, a host's kind, no KEYED flag (it has no key), byte 7 zero.
            if version != P.PROTO_VERSION or kind not in (1, 2, 3) or st.inbuf[6:8] != b"\0\0":
                self.fail("lorelayd's preamble %s" % bytes(st.inbuf[:8]).hex())
            st.kind = kind
            data = bytes(st.inbuf[8:])
            st.inbuf = bytearray()
            st.state = "first"
        st.parser.feed(data)
        try:
            frames = st.parser.frames()
        except P.ProtoError as e:
            self.fail("lorelayd sent %s" % e)
            st.state = "dead"
            return
        for fr in frames:
            t, p = fr.type, fr.payload
            if st.state == "first":
                self.on_first_frame(st, t, p, now)
            elif st.state == "welcomed":
                self.check_from_host(st, t, p)
            elif st.state in ("answered", "relay", "silent"):
                break

    # ---------------------------------------------------------- host side

    def start_client(self, now):
        """A host client connecting to a stand-in lorelayd may have opened."""
        if len(self.clients) >= 24 or not self.announced:
            return
        fam, _flags, port, _addr = self.rng.choice(sorted(self.announced))
        v6 = fam == 6 and self.v6 and self.rng.random() < 0.5
        s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect_ex(("::1" if v6 else "127.0.0.1", port))
        except OSError:
            s.close()
            return
        self.stats["clients"] += 1
        self.clients.append([s, now + self.rng.choice((0.05, 0.5, 2.0, 6.0)), False,
                             self.rng.random() < 0.3])

    def service_clients(self, now, readable, writable):
        keep = []
        for c in self.clients:
            s, close_at, connected, reset = c
            done = now >= close_at
            if s in writable and not connected:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    done = True
                else:
                    c[2] = True
                    try:
                        s.send(self.garbage(2000))
                        if self.rng.random() < 0.3:
                            s.shutdown(socket.SHUT_WR)
                    except OSError:
                        done = True
            if s in readable:
                try:
                    if not s.recv(65536):
                        done = True
                except OSError:
                    done = True
            if done:
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            else:
                keep.append(c)
        self.clients = keep

    def service_server(self, readable):
        if self.server in readable:
            try:
                conn, _ = self.server.accept()
                conn.setblocking(False)
                self.server_conns.append(conn)
            except OSError:
                pass
        keep = []
        for c in self.server_conns:
            if c in readable:
                try:
                    data = c.recv(65536)
                    if not data:
                        raise OSError
                    c.send(data[:4096])
                except OSError:
                    c.close()
                    continue
            keep.append(c)
        self.server_conns = keep

    def ask_status(self, request, timeout=5.0):
        """One status endpoint request; the answer (bytes) up to the close."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        t0 = time.monotonic()
        try:
            s.connect(self.status_path)
            try:
                s.sendall(request)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass   # it may have answered and closed already
            chunks = []
            while True:
                try:
                    b = s.recv(65536)
                except ConnectionResetError:
                    break
                if not b:
                    break
                chunks.append(b)
                if time.monotonic() - t0 > timeout:
                    raise socket.timeout()
            return b"".join(chunks)
        except socket.timeout:
            raise Failure("status endpoint did not answer %r and close within %.0f s" %
                          (request[:40], timeout))
        finally:
            s.close()

    def status_probe(self):
        self.stats["status"] += 1
        r = self.rng
        x = r.random()
        if x < 0.5:
            doc = self.ask_status(b"status json\n")
            try:
                j = json.loads(doc.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                self.fail("status json is not JSON (%s): %r" % (e, doc[:200]))
                return
            if not isinstance(j, dict) or [g.get("name") for g in j.get("guests", [])] != ["fuzz"]:
                self.fail("status json has an unexpected shape: %r" % doc[:200])
        elif x < 0.7:
            # The config line first (the file in effect), then the guest.
            table = self.ask_status(b"status table\n")
            if not table.startswith(b"config ") or b"\nguest fuzz" not in table:
                self.fail("status table is not the config line and then the guest: %r"
                          % table[:200])
        else:
            req = self.garbage(100)
            if r.random() < 0.5:
                req += b"\n"
            self.ask_status(req)

    # ---------------------------------------------------------- run

    def setup(self):
        port_rng = random.Random(self.args.seed ^ 0x5EED)
        self.v6 = have_ipv6()
        self.block_hi = pick_block(port_rng, self.v6)
        self.block = self.block_hi * 256
        self.rev_ports = [self.block + 248, self.block + 249, self.block + 250]
        self.dir = tempfile.mkdtemp(prefix="lorelay-stateful-")
        self.agent_path = os.path.join(self.dir, "agent.sock")
        self.status_path = os.path.join(self.dir, "status.sock")
        cfg = os.path.join(self.dir, "lorelay.ini")
        with open(cfg, "w") as f:
            f.write("[lorelay]\nreversePorts = %s\nconflictRetryMs = 200\nremapOnConflict = %s\n"
                    % (", ".join(map(str, self.rev_ports)),
                       "true" if self.rng.random() < 0.5 else "false"))
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.agent_path)
        self.listener.listen(128)
        self.listener.setblocking(False)
        # The reverse target: a host server on the first reverse port, IPv4
        # only, so lorelayd also meets refusals and the other-family retry.
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.rev_ports[0]))
        self.server.listen(64)
        self.server.setblocking(False)

        env = dict(os.environ)
        env["ASAN_OPTIONS"] = ":".join(filter(None, [
            env.get("ASAN_OPTIONS", ""), "log_path=" + os.path.join(self.dir, "asan"),
            "detect_leaks=1", "halt_on_error=1"]))
        env["UBSAN_OPTIONS"] = ":".join(filter(None, [
            env.get("UBSAN_OPTIONS", ""), "log_path=" + os.path.join(self.dir, "ubsan"),
            "print_stacktrace=1", "halt_on_error=1"]))
        self.daemon_log = open(os.path.join(self.dir, "lorelayd.log"), "wb")
        cmd = [os.path.join(self.args.bin_dir, "lorelayd"), "--guest", "unix:" + self.agent_path,
               "--socket", self.status_path, "-c", cfg, "--log-level", os.environ.get("LORELAY_FUZZ_LOG_LEVEL", "warn"), "--name", "fuzz"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.daemon_log,
                                     stderr=subprocess.STDOUT, env=env)
        log("ports %d-%d (listeners %d-%d, reversePorts %s, host server on %d), ipv6 %s, dir %s"
            % (self.block, self.block + 255, self.block, self.block + 31,
               ",".join(map(str, self.rev_ports)), self.rev_ports[0], "on" if self.v6 else "off",
               self.dir))

    def loop(self):
        t0 = time.monotonic()
        end = t0 + self.args.seconds
        next_status = t0 + 1.0
        next_report = t0 + 10.0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if self.proc.poll() is not None:
                raise Failure("lorelayd exited with status %d during the run" % self.proc.returncode)
            # scheduled pieces and closes
            for st in self.streams:
                while st.later and st.later[0][0] <= now:
                    st.out += st.later.pop(0)[1]
                if st.close_at is not None and now >= st.close_at and not st.out and not st.later:
                    st.state = "dead"
            self.reap()
            # act
            if self.ctl is not None and self.ctl.state == "welcomed" and self.rng.random() < 0.5:
                self.control_action(self.ctl, now)
            if self.rng.random() < 0.02:
                self.start_client(now)
            if now >= next_status:
                self.status_probe()
                next_status = now + self.rng.uniform(0.5, 3.0)
            if now >= next_report:
                log("t=%.0fs %s" % (now - t0, self.summary()))
                next_report += 10.0
            # wait for I/O
            rd = [self.listener, self.server] + self.streams + self.server_conns + \
                [c[0] for c in self.clients]
            wr = [st for st in self.streams if st.out] + \
                [c[0] for c in self.clients if not c[2]]
            try:
                readable, writable, _ = select.select(rd, wr, [], 0.004)
            except InterruptedError:
                continue
            now = time.monotonic()
            if self.listener in readable:
                self.accept(now)
            for st in self.streams:
                if st in writable and st.out:
                    try:
                        n = st.sock.send(st.out)
                        del st.out[:n]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        st.state = "dead"
                if st in readable and st.state != "dead":
                    self.on_readable(st, now)
            self.service_clients(now, readable, writable)
            self.service_server(readable)

    def accept(self, now):
        for _ in range(16):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self.streams.append(Stream(conn, now))
        if len(self.streams) > 300:   # keep the script's own descriptors bounded
            for st in self.streams[:50]:
                st.state = "dead"

    def reap(self):
        keep = []
        for st in self.streams:
            if st.state == "dead":
                if st.reset:
                    # Unix sockets have no RST: a full close while lorelayd
                    # still writes is its reading of a reset.
                    try:
                        st.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                st.sock.close()
                if st is self.ctl:
                    self.ctl = None
            else:
                keep.append(st)
        self.streams = keep

    def summary(self):
        s = self.stats
        return ("%d control sessions (%d hostile handshakes), %d control actions, %d frames, "
                "%d data + %d reverse streams, %d host clients, %d status requests, "
                "%d PONG, %d PORT_STATE, %d REVERSE_FAIL, %d STREAM_CLOSE" %
                (s["ctl"], s["hostile_handshakes"], s["actions"], s["frames"], s["data"],
                 s["reverse"], s["clients"], s["status"], s["pongs"], s["port_states"],
                 s["reverse_fails"], s["stream_closes"]))

    def finish(self):
        """Stop poking, check the daemon answers, stop it, read the sanitizers."""
        for st in self.streams:
            st.sock.close()
        self.streams = []
        for c in self.clients:
            c[0].close()
        for c in self.server_conns:
            c.close()
        if self.proc.poll() is not None:
            raise Failure("lorelayd exited with status %d" % self.proc.returncode)
        ctl = os.path.join(self.args.bin_dir, "lorelayctl")
        r = subprocess.run([ctl, "--socket", self.status_path, "status", "--json"],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            self.fail("lorelayctl status --json exited %d: %s" %
                      (r.returncode, r.stderr.decode(errors="replace").strip()))
        else:
            try:
                doc = json.loads(r.stdout.decode("utf-8"))
                g = doc["guests"][0]
                log("final status: guest %s %s, %d port(s), %d reverse" %
                    (g["name"], g["state"], len(g["ports"]), len(g["reverse"])))
            except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as e:
                self.fail("lorelayctl status --json: not the status document (%s): %r" %
                          (e, r.stdout[:300]))
        r = subprocess.run([ctl, "--socket", self.status_path, "status"],
                           capture_output=True, timeout=30)
        if r.returncode != 0:
            self.fail("lorelayctl status exited %d" % r.returncode)
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("lorelayd did not stop within 20 s of SIGTERM")
        if rc != 0:
            self.fail("lorelayd exited with status %d after SIGTERM" % rc)

    def sanitizer_reports(self):
        reports = []
        for path in sorted(glob.glob(os.path.join(self.dir, "asan*")) +
                           glob.glob(os.path.join(self.dir, "ubsan*"))):
            with open(path, "rb") as f:
                body = f.read()
            if body.strip():
                reports.append((path, body))
        path = os.path.join(self.dir, "lorelayd.log")
        if os.path.exists(path):
            with open(path, "rb") as f:
                body = f.read()
            if any(m in body for m in SANITIZER_MARKS):
                reports.append((path, body))
        return reports

    def cleanup(self, keep):
        for name in ("listener", "server", "daemon_log"):
            if getattr(self, name, None) is not None:
                getattr(self, name).close()
        if keep:
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="Stateful fuzz of lorelayd: a hostile agent.")
    ap.add_argument("--bin-dir", default=os.environ.get(
        "LORELAY_ASAN_BIN_DIR", os.path.join(HERE, "..", "..", "build", "linux-asan", "bin")),
        help="the linux-asan build's bin/ (lorelayd, lorelayctl)")
    ap.add_argument("--seconds", type=float,
                    default=float(os.environ.get("LORELAY_STATEFUL_SECONDS", "60")),
                    help="how long to fuzz (default 60, or $LORELAY_STATEFUL_SECONDS)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: a new one)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 32)
    log("seed %d (replay: --seed %d), %.0f s" % (args.seed, args.seed, args.seconds))

    missing = [n for n in ("lorelayd", "lorelayctl")
               if not os.access(os.path.join(args.bin_dir, n), os.X_OK)]
    if missing:
        lrci.exit_skip_or_fail(
            "%s not built in %s: the stateful fuzz needs the linux-asan build "
            "(cmake --preset linux-asan && cmake --build --preset linux-asan)"
            % (", ".join(missing), args.bin_dir), NAME)
    with open(os.path.join(args.bin_dir, "lorelayd"), "rb") as f:
        if b"__asan_init" not in f.read():
            log("FAIL: %s/lorelayd is not an AddressSanitizer build: its memory errors "
                "would go unseen" % args.bin_dir)
            return 1

    fz = Fuzz(args)
    ok = False
    try:
        fz.setup()
        fz.loop()
        fz.finish()
        ok = True
    except Failure as e:
        fz.fail(str(e))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            fz.fail("a port of the chosen block was taken meanwhile: %s" % e)
        else:
            raise
    finally:
        if getattr(fz, "proc", None) is not None and fz.proc.poll() is None:
            fz.proc.kill()
            fz.proc.wait()
    reports = fz.sanitizer_reports() if hasattr(fz, "dir") else []
    for path, body in reports:
        fz.fail("sanitizer report in %s" % os.path.basename(path))
        sys.stdout.write(body.decode(errors="replace")[-6000:] + "\n")
    log(fz.summary())
    if fz.errors:
        path = os.path.join(getattr(fz, "dir", ""), "lorelayd.log")
        if os.path.exists(path):
            with open(path, "rb") as f:
                tail = f.read()[-3000:]
            log("last lines of lorelayd's log:\n" + tail.decode(errors="replace"))
        log("FAIL: %d problem(s), seed %d" % (len(fz.errors), args.seed))
    elif ok:
        log("PASS, seed %d" % args.seed)
    if hasattr(fz, "dir"):
        fz.cleanup(args.keep or bool(fz.errors))
    return 1 if fz.errors or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
