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

The random sequence is seeded; the seed is printed, and --seed replays the
same choices (timing still varies). Exit status: 0 pass, 1 fail, 77 skip
(the ASan build is missing and CI is not set; in CI that is a failure).
"""

import argparse
import errno
import glob
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
sys.path.insert(0, os.path.dirname(HERE))  # tests/: lrci
sys.path.insert(0, HERE)

import lrci  # noqa: E402
import lrwire as w  # noqa: E402

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
            if len(self.pre) < w.HDR_LEN:
                take = min(8 - len(self.pre), len(out) - i)
                self.pre += bytes(out[i:i + take])
                i += take
                if len(self.pre) == 8:
                    try:
                        version, kind = w.parse_preamble(self.pre)
                        self.dead = version != w.VERSION or kind not in (1, 2, 3)
                    except w.DecodeError:
                        self.dead = True
                continue
            if self.type is None:
                take = min(w.HDR_LEN - len(self.hdr), len(out) - i)
                self.hdr += bytes(out[i:i + take])
                i += take
                if len(self.hdr) == w.HDR_LEN:
                    t, _flags, n = struct.unpack(">HHI", self.hdr)
                    self.hdr = b""
                    if n > w.MAX_PAYLOAD:
                        self.dead = True
                        continue
                    self.type, self.need, self.payload = t, n, bytearray()
                    if n == 0:
                        self._done()
                continue
            take = min(self.need - len(self.payload), len(out) - i)
            if self.type == w.LISTENER_ADD and len(self.payload) <= 2 < len(self.payload) + take:
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
        self.inbuf = bytearray()
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
        if self.shadow is not None:
            data = self.shadow.filter(data)
        if delay and now is not None:
            self.later.append((now + delay, data))
        elif self.later:
            # keep order behind pieces still waiting
            self.later.append((self.later[-1][0], data))
        elif len(self.out) < (1 << 20):
            self.out += data

    def fileno(self):
        return self.sock.fileno()


class Fuzz:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.errors = []
        self.stats = dict(ctl=0, data=0, reverse=0, actions=0, frames=0, clients=0,
                          status=0, pongs=0, port_states=0, reverse_fails=0, attaches=0,
                          opens=0, hostile_handshakes=0)
        # What lorelayd was really sent, across all control streams.
        self.pings = set()
        self.announced = set()     # (family, flags, port, addr) of decoded LISTENER_ADDs
        self.rev_ids = set()       # ids of decoded REVERSE_OPENs
        self.rev_ids_listed = set()
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
        try:
            d = w.decode(t, p)
        except (w.DecodeError, KeyError):
            return
        if t == w.PING:
            self.pings.add(d["nonce"])
        elif t == w.LISTENER_ADD:
            self.announced.add((d["family"], d["flags"], d["port"], d["addr"]))
        elif t == w.REVERSE_OPEN:
            self.rev_ids.add(d["id"])
            if d["port"] in self.rev_ports:
                self.rev_ids_listed.add(d["id"])

    def check_from_host(self, st, t, p):
        """A frame lorelayd sent on a control stream after HELLO."""
        try:
            d = w.decode(t, p)
        except KeyError:
            return self.fail("lorelayd sent unknown frame type %d on a control stream" % t)
        except w.DecodeError as e:
            return self.fail("lorelayd sent a malformed %s: %s (%s)" %
                             (w.NAMES.get(t, t), e, p.hex()[:80]))
        if t == w.PING:
            st.send(w.ping(d["nonce"], w.PONG))
        elif t == w.PONG:
            self.stats["pongs"] += 1
            if d["nonce"] not in self.pings:
                self.fail("PONG %#x answers no PING we sent" % d["nonce"])
        elif t == w.PORT_STATE:
            self.stats["port_states"] += 1
            key = (d["family"], d["flags"], d["port"], d["addr"])
            if key not in self.announced:
                self.fail("PORT_STATE for a listener never reported: %r" % (key,))
        elif t == w.REVERSE_SET:
            if set(d["ports"]) != set(self.rev_ports) or len(d["ports"]) != len(self.rev_ports):
                self.fail("REVERSE_SET %r, configured %r" % (d["ports"], self.rev_ports))
            if d["flags"] != (w.REVERSE_IPV6 if self.v6 else 0):
                self.fail("REVERSE_SET flags %d" % d["flags"])
        elif t == w.REVERSE_FAIL:
            self.stats["reverse_fails"] += 1
            if d["id"] not in self.rev_ids:
                self.fail("REVERSE_FAIL for id %d, never asked for" % d["id"])
        else:
            self.fail("lorelayd sent %s on a control stream" % w.NAMES[t])

    # ---------------------------------------------------------- frames

    def rand_addr(self, family):
        r = self.rng.random()
        if family == 4:
            if r < 0.4:
                return bytes(4)
            if r < 0.8:
                return bytes([127, 0, 0, 1])
            return bytes(self.rng.randrange(256) for _ in range(4))
        if r < 0.4:
            return bytes(16)
        if r < 0.8:
            return bytes(15) + b"\x01"
        return bytes(self.rng.randrange(256) for _ in range(16))

    def pool_port(self):
        return self.block + self.rng.randrange(32)

    def rand_listener(self, mtype):
        fam = self.rng.choice((4, 6))
        flags = 0 if fam == 4 else self.rng.choice((0, 0, w.V6ONLY))
        if mtype == w.LISTENER_DEL and self.announced and self.rng.random() < 0.7:
            fam, flags, port, addr = self.rng.choice(sorted(self.announced))
            return w.listener(mtype, fam, port, addr, flags)
        return w.listener(mtype, fam, self.pool_port(), self.rand_addr(fam), flags)

    def rand_text(self, maxlen=40):
        n = self.rng.randrange(maxlen + 1)
        return bytes(self.rng.randrange(32, 127) for _ in range(n))

    def valid_frame(self, types=None):
        r = self.rng
        t = r.choice(types or (w.LISTENER_ADD, w.LISTENER_ADD, w.LISTENER_ADD, w.LISTENER_DEL,
                               w.LISTENER_DEL, w.SYNC_DONE, w.PING, w.PONG, w.WELCOME,
                               w.REVERSE_OPEN, w.REVERSE_OPEN, w.HELLO, w.PORT_STATE,
                               w.REVERSE_SET, w.REVERSE_FAIL, w.OPEN, w.OPEN_RESULT, w.ATTACH))
        if t in (w.LISTENER_ADD, w.LISTENER_DEL):
            return self.rand_listener(t)
        if t == w.SYNC_DONE:
            return w.empty()
        if t in (w.PING, w.PONG):
            return w.ping(r.getrandbits(64), t)
        if t in (w.WELCOME, w.HELLO):
            return w.hello(self.rand_text(20), self.rand_text(60), self.rand_text(20), t)
        if t == w.REVERSE_OPEN:
            port = r.choice(self.rev_ports) if r.random() < 0.6 else r.randrange(1, 65536)
            return w.reverse_open(r.getrandbits(32), r.choice((4, 6)), port)
        if t == w.PORT_STATE:
            return w.port_state(4, self.pool_port(), None, 0, r.randrange(4), r.randrange(65536))
        if t == w.REVERSE_SET:
            return w.reverse_set([r.randrange(1, 65536) for _ in range(r.randrange(5))])
        if t == w.REVERSE_FAIL:
            return w.reverse_fail(r.getrandbits(32), r.randrange(8), self.rand_text())
        if t == w.OPEN:
            return w.open_(self.rand_text(8), r.choice((4, 6)), r.randrange(1, 65536))
        if t == w.OPEN_RESULT:
            return w.open_result(r.randrange(8), self.rand_text())
        return w.attach(self.rand_text(8), r.getrandbits(32))

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
                n = r.choice((0, 1, r.randrange(64), r.randrange(w.MAX_PAYLOAD + 1),
                              w.MAX_PAYLOAD + 1, 0xFFFFFFFF))
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
            frames = w.preamble(w.KIND_CONTROL) + w.welcome(name, self.rand_text(10))
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
        choice = r.randrange(9)
        if choice == 0:
            st.send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        elif choice == 1 and r.random() < 0.15:   # lorelayd waits 5 s after these two
            st.send(w.preamble(w.KIND_CONTROL, version=2) + w.error(w.ERR_VERSION, "v2"))
        elif choice == 2 and r.random() < 0.15:
            st.send(w.preamble(w.KIND_CONTROL) + w.error(w.ERR_AUTH, "bad token"))
        elif choice == 3:
            st.send(w.preamble(w.KIND_CONTROL) + w.error(w.ERR_PROTOCOL, self.rand_text()))
        elif choice == 4:
            st.send(w.preamble(w.KIND_CONTROL) + self.valid_frame())
        elif choice == 5:
            st.send(w.preamble(w.KIND_CONTROL) + self.garbage())
        elif choice == 6:
            st.send(w.preamble(r.randrange(256)) + w.welcome())
        elif choice == 7:
            st.send(self.mutate(w.preamble(w.KIND_CONTROL) + w.welcome()))
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
            data = b"".join(self.valid_frame((w.LISTENER_ADD, w.LISTENER_DEL))
                            for _ in range(r.randrange(2, 40)))
        elif x < 0.82:
            data = self.mutate(self.valid_frame())
        elif x < 0.87:
            data = w.frame(r.randrange(33, 65536), self.garbage(200))
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
            data = w.preamble(w.KIND_CONTROL) + w.welcome()   # a second preamble: garbage
        elif x < 0.97:
            data = w.error(r.randrange(8), self.rand_text())
        elif x < 0.98:
            data = w.frame(w.PING, bytes(8), length=w.MAX_PAYLOAD + 1)
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
        pre = w.preamble(st.kind)
        st.state = "answered"
        if x < 0.55:
            st.send(pre + w.open_result(0))
            if r.random() < 0.3:
                st.send(self.garbage(200))   # early relay bytes right behind the frame
            st.state = "relay"
            st.echo = r.random() < 0.8
            st.close_at = now + r.choice((0.05, 0.5, 2.0, 5.0))
            st.reset = r.random() < 0.3
            return
        if x < 0.70:
            st.send(pre + w.open_result(r.randrange(1, 8), self.rand_text()))
        elif x < 0.75:
            st.send(pre + w.error(r.randrange(8), self.rand_text()))
        elif x < 0.83:
            st.send(pre + self.mutate(w.open_result(0)))
        elif x < 0.87:
            st.send(self.mutate(pre) + w.open_result(0))
        elif x < 0.91:
            st.send(pre + self.garbage())
        elif x < 0.94:
            f = pre + w.open_result(0)
            k = r.randrange(1, len(f))
            st.send(f[:k])                                 # then nothing: a cut answer
        elif x < 0.97:
            st.state = "silent"                            # no answer: lorelayd times out
            st.close_at = now + 7.0
            return
        st.close_at = now + r.choice((0.0, 0.1, 1.0))
        st.reset = r.random() < 0.5

    def on_first_frame(self, st, t, p, now):
        try:
            d = w.decode(t, p)
        except (KeyError, w.DecodeError) as e:
            self.fail("lorelayd opened a %s stream with a bad %s frame: %s" %
                      ({1: "control", 2: "data", 3: "reverse"}[st.kind], w.NAMES.get(t, t), e))
            st.close_at = now
            return
        if st.kind == w.KIND_CONTROL:
            if t != w.HELLO:
                self.fail("control stream opened with %s, not HELLO" % w.NAMES[t])
            elif d["token"]:
                self.fail("HELLO carries a token, none was configured")
            self.stats["ctl"] += 1
            self.handshake(st, now)
        elif st.kind == w.KIND_DATA:
            self.stats["data"] += 1
            if t != w.OPEN:
                self.fail("data stream opened with %s, not OPEN" % w.NAMES[t])
            elif d["token"]:
                self.fail("OPEN carries a token, none was configured")
            elif not any(a[0] in (4, 6) and a[2] == d["port"] for a in self.announced):
                self.fail("OPEN for port %d, which no LISTENER_ADD reported" % d["port"])
            self.stats["opens"] += 1
            self.answer_open(st, now)
        else:
            self.stats["reverse"] += 1
            if t != w.ATTACH:
                self.fail("reverse stream opened with %s, not ATTACH" % w.NAMES[t])
            elif d["id"] not in self.rev_ids_listed:
                self.fail("ATTACH for id %d, never asked for on a listed port" % d["id"])
            self.stats["attaches"] += 1
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
        st.inbuf += data
        if st.state == "preamble":
            if len(st.inbuf) < 8:
                return
            try:
                version, kind = w.parse_preamble(bytes(st.inbuf[:8]))
            except w.DecodeError as e:
                self.fail("lorelayd's preamble: %s" % e)
                st.state = "dead"
                return
            if version != w.VERSION or kind not in (1, 2, 3) or st.inbuf[6:8] != b"\0\0":
                self.fail("lorelayd's preamble %s" % bytes(st.inbuf[:8]).hex())
            st.kind = kind
            del st.inbuf[:8]
            st.state = "first"
        try:
            frames, rest = w.split_frames(st.inbuf)
        except w.DecodeError as e:
            self.fail("lorelayd sent %s" % e)
            st.state = "dead"
            return
        st.inbuf = bytearray(rest)
        for t, _flags, p in frames:
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
            if not self.ask_status(b"status table\n").startswith(b"guest fuzz"):
                self.fail("status table does not start with the guest")
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
               "--socket", self.status_path, "-c", cfg, "--log-level", "warn", "--name", "fuzz"]
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
                "%d PONG, %d PORT_STATE, %d REVERSE_FAIL" %
                (s["ctl"], s["hostile_handshakes"], s["actions"], s["frames"], s["data"],
                 s["reverse"], s["clients"], s["status"], s["pongs"], s["port_states"],
                 s["reverse_fails"]))

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
