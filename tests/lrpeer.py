"""lrpeer: a scriptable lorelay protocol peer, for tests that play a hostile
or broken side of the wire.

    codec      preamble(), frame(), enc_*() / decode() for every message in
               docs/protocol.md (protocol 2: auth blocks, CHALLENGE, the
               preamble's KEYED flag); the protocol version is a parameter.
               The auth blocks are carried as bytes ("token", the field's
               protocol-1 name); no MAC is computed here, so a peer is
               keyless or a forger. decode(..., strict=True) refuses what
               lr_proto.c's decoders refuse, so a test can predict what
               lorelay accepts and check that what it sends is valid.
    Stream     one socket with frame-level send/receive, an optional
               background reader (auto-PONG, frame log) and "did the peer
               close it" probes
    FakeAgent  listens on a Unix socket path like lorelay-agent does, so a
               real `lorelayd --guest unix:PATH` connects to it; the test
               takes each control stream (preamble + HELLO answered with
               WELCOME), then sends whatever it likes: listings, floods,
               raw bytes, or stops reading. Data and reverse streams are
               answered by a policy: echo, refuse, hang (or a callable).
    FakeHost   connects to a real agent's socket and speaks the host side
               (preamble, HELLO, OPEN, ATTACH) or sends garbage.

The encoders do not police their input: a test may build a frame whose
length field lies, a string with NUL or escape bytes, a port 0. Written
from docs/protocol.md, not translated from the C encoders, so that it is a
second implementation: where the two disagree, the tests show it (the
seed corpus of tests/fuzz, the stateful fuzz, the e2e tests). Stdlib only.
"""

import ipaddress
import os
import queue
import select
import socket
import struct
import threading
import time

MAGIC = b"LRLY"
# Protocol 2: the token fields became auth blocks of the same shape (u8
# length, bytes), empty without a key, so a keyless peer speaks it as is.
PROTO_VERSION = 2
PREAMBLE_KEYED = 0x01      # preamble flags (byte 6): this side has a key

# KIND_ANY: a keyed agent's preamble, sent before the host's names the kind.
KIND_ANY, KIND_CONTROL, KIND_DATA, KIND_REVERSE = 0, 1, 2, 3

NONCE_LEN = 32
MAC_LEN = 32
AUTH_HOST_LEN = NONCE_LEN + MAC_LEN   # HELLO, OPEN, ATTACH: nonce, MAC
AUTH_AGENT_LEN = MAC_LEN              # WELCOME, OPEN_RESULT: MAC

HELLO = 1
WELCOME = 2
ERROR = 3
CHALLENGE = 4
LISTENER_ADD = 10
LISTENER_DEL = 11
SYNC_DONE = 12
PORT_STATE = 13
REVERSE_SET = 14
REVERSE_OPEN = 15
REVERSE_FAIL = 16
STREAM_CLOSE = 18
PING = 20
PONG = 21
OPEN = 30
OPEN_RESULT = 31
ATTACH = 32

MSG_NAMES = {
    HELLO: "HELLO", WELCOME: "WELCOME", ERROR: "ERROR", CHALLENGE: "CHALLENGE",
    LISTENER_ADD: "LISTENER_ADD",
    LISTENER_DEL: "LISTENER_DEL", SYNC_DONE: "SYNC_DONE", PORT_STATE: "PORT_STATE",
    REVERSE_SET: "REVERSE_SET", REVERSE_OPEN: "REVERSE_OPEN", REVERSE_FAIL: "REVERSE_FAIL",
    STREAM_CLOSE: "STREAM_CLOSE",
    PING: "PING", PONG: "PONG", OPEN: "OPEN", OPEN_RESULT: "OPEN_RESULT", ATTACH: "ATTACH",
}

ERR_OK, ERR_REFUSED, ERR_UNREACHABLE, ERR_TIMEOUT, ERR_AUTH, ERR_VERSION, ERR_PROTOCOL, \
    ERR_INTERNAL, ERR_BUSY = range(9)

LISTENER_V6ONLY = 0x01
LISTENER_UDP = 0x02        # a bound UDP socket (only sent to a host whose HELLO has CAP_UDP)
CAP_UDP = 0x01             # HELLO/WELCOME caps byte, after the version: forwards UDP
CAP_CLOSE_NOTICE = 0x02    # ... numbers data streams (OPEN's id) and honours STREAM_CLOSE
CLOSE_FIN, CLOSE_RESET = 1, 2  # STREAM_CLOSE kinds
OPEN_PASS_FD = 0x01        # OPEN flags (optional byte after the port)
OPEN_UDP = 0x02            # the stream is a UDP flow: framed datagrams after OPEN_RESULT
DGRAM_MAX = 65507
REVERSE_IPV6 = 0x01
PORT_STATES = {0: "forwarding", 1: "conflict", 2: "remapped", 3: "ignored", 4: "denied"}

FRAME_HDR = struct.Struct(">HHI")
HDR_LEN = FRAME_HDR.size
MAX_PAYLOAD = 4096
REVERSE_MAX_PORTS = 1024
# The longest strings a decoder takes (its buffer, NUL included: one less).
NAME_CAP, VERSION_CAP, TEXT_CAP = 128, 32, 512


class ProtoError(Exception):
    pass


# ---------------------------------------------------------------- encoding

def preamble(kind, version=PROTO_VERSION, flags=0):
    return MAGIC + bytes([version & 0xFF, kind & 0xFF, flags & 0xFF, 0])


def decode_preamble(b):
    """(version, kind) from 8 bytes; ProtoError on a bad magic or length."""
    if len(b) < 8:
        raise ProtoError("short preamble %r" % bytes(b))
    if bytes(b[:4]) != MAGIC:
        raise ProtoError("bad magic %r" % bytes(b[:8]))
    return b[4], b[5]


def frame_header(ftype, length, flags=0):
    """A header alone, with any length (a liar's header included)."""
    return FRAME_HDR.pack(ftype & 0xFFFF, flags & 0xFFFF, length & 0xFFFFFFFF)


def frame(ftype, payload=b"", flags=0):
    return frame_header(ftype, len(payload), flags) + bytes(payload)


def _b(s):
    return s.encode() if isinstance(s, str) else bytes(s)


def _str8(s):
    s = _b(s)
    return bytes([len(s) & 0xFF]) + s


def _text16(s):
    s = _b(s)
    return struct.pack(">H", len(s) & 0xFFFF) + s


def enc_hello(token=b"", name="", version=""):
    """HELLO and WELCOME: u8 alen, auth, u8 nlen, name, u8 vlen, version."""
    return _str8(token) + _str8(name) + _str8(version)


def enc_error(code, text=""):
    """ERROR: u32 code, u16 len, text."""
    return struct.pack(">I", code) + _text16(text)


def enc_open_result(code, text="", token=None):
    """OPEN_RESULT: u32 status, u16 len, text, u8 alen, auth. token None
    leaves the auth block out (the payload ends after the text: an empty
    one to the reader); b"" writes an empty one."""
    return enc_error(code, text) + (b"" if token is None else _str8(token))


def enc_challenge(nonce):
    """CHALLENGE: nonce[32] (any bytes: the encoders do not police)."""
    return bytes(nonce)


def addr16(addr):
    """16 address bytes: IPv4 in the first four, the rest zero."""
    ip = ipaddress.ip_address(addr)
    raw = ip.packed
    return raw + b"\0" * (16 - len(raw))


def enc_listener(addr, port, v6only=False, family=None, flags=None, owner=None):
    """LISTENER_ADD/DEL: u8 family, u8 flags, u16 port, addr[16]; with
    owner=(pid, command), LISTENER_ADD's optional u32 pid, u16 clen,
    command[clen] (any bytes, any length: the encoders do not police)."""
    ip = ipaddress.ip_address(addr)
    fam = family if family is not None else (6 if ip.version == 6 else 4)
    fl = flags if flags is not None else (LISTENER_V6ONLY if v6only else 0)
    out = struct.pack(">BBH", fam, fl, port & 0xFFFF) + addr16(addr)
    if owner is not None:
        out += struct.pack(">I", owner[0] & 0xFFFFFFFF) + _text16(owner[1])
    return out


def enc_port_state(listener_payload, state, host_port):
    return bytes(listener_payload[:20]) + struct.pack(">BH", state, host_port)


def enc_reverse_set(ports, flags=REVERSE_IPV6):
    return struct.pack(">BH", flags, len(ports)) + b"".join(struct.pack(">H", p) for p in ports)


def enc_reverse_open(rid, family, port):
    return struct.pack(">IBH", rid & 0xFFFFFFFF, family, port & 0xFFFF)


def enc_reverse_fail(rid, code, text=""):
    return struct.pack(">I", rid) + enc_error(code, text)


def enc_ping(nonce):
    return struct.pack(">Q", nonce & 0xFFFFFFFFFFFFFFFF)


def enc_open(family, port, token=b"", flags=None, stream_id=None):
    b = _str8(token) + struct.pack(">BH", family, port & 0xFFFF)
    if flags is not None or stream_id is not None:
        b += bytes([flags or 0])
    if stream_id is not None:
        b += struct.pack(">I", stream_id & 0xFFFFFFFF)
    return b


def enc_stream_close(stream_id, kind, nbytes=0):
    """STREAM_CLOSE: u32 stream id, u8 kind (CLOSE_FIN, CLOSE_RESET), u64 bytes."""
    return struct.pack(">IBQ", stream_id & 0xFFFFFFFF, kind & 0xFF, nbytes & 0xFFFFFFFFFFFFFFFF)


def enc_dgram(payload, length=None):
    """One datagram on a UDP flow's stream: u16 length, bytes. length
    overrides the header (a lie: oversized or truncated frames)."""
    return struct.pack(">H", (len(payload) if length is None else length) & 0xFFFF) + bytes(payload)


def dgram_split(buf):
    """Complete datagrams at the front of buf (bytearray, consumed)."""
    out = []
    while len(buf) >= 2:
        n = struct.unpack(">H", bytes(buf[:2]))[0]
        if len(buf) < 2 + n:
            break
        out.append(bytes(buf[2:2 + n]))
        del buf[:2 + n]
    return out


def enc_attach(rid, token=b"", stream_id=None):
    b = _str8(token) + struct.pack(">I", rid & 0xFFFFFFFF)
    if stream_id is not None:
        b += struct.pack(">I", stream_id & 0xFFFFFFFF)
    return b


# Whole frames for the common messages.
def hello_frame(name="fake-host", version="0-fake", token=b""):
    return frame(HELLO, enc_hello(token, name, version))


def welcome_frame(name="fake-guest", version="0-fake"):
    return frame(WELCOME, enc_hello(b"", name, version))


def listener_frame(addr, port, v6only=False, add=True, owner=None):
    return frame(LISTENER_ADD if add else LISTENER_DEL, enc_listener(addr, port, v6only,
                                                                     owner=owner))


def ping_frame(nonce):
    return frame(PING, enc_ping(nonce))


def sync_done_frame():
    return frame(SYNC_DONE)


def reverse_open_frame(rid, family, port):
    return frame(REVERSE_OPEN, enc_reverse_open(rid, family, port))


def error_frame(code, text=""):
    return frame(ERROR, enc_error(code, text))


# ---------------------------------------------------------------- decoding

class _Cur:
    def __init__(self, b, strict=False):
        self.b = bytes(b)
        self.o = 0
        self.strict = strict

    def take(self, n):
        if self.o + n > len(self.b):
            raise ProtoError("payload too short")
        v = self.b[self.o:self.o + n]
        self.o += n
        return v

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def _string(self, s, cap):
        if self.strict and (len(s) >= cap or b"\0" in s):
            raise ProtoError("string of %d bytes%s does not fit %d" %
                             (len(s), " with a NUL" if b"\0" in s else "", cap - 1))
        return s

    def str8(self, cap=256):
        return self._string(self.take(self.u8()), cap)

    def auth(self):
        """An auth block: u8 alen, bytes (any bytes, NULs included)."""
        return self.take(self.u8())

    def text16(self, cap=TEXT_CAP):
        return self._string(self.take(self.u16()), cap)

    def check(self, ok, what):
        if self.strict and not ok:
            raise ProtoError(what)

    def at_end(self):
        return self.o == len(self.b)


def _addr_str(fam, raw):
    if fam == 4:
        return str(ipaddress.IPv4Address(raw[:4]))
    return str(ipaddress.IPv6Address(raw))


def _listener(c):
    fam, flags, port = c.u8(), c.u8(), c.u16()
    raw = c.take(16)
    c.check(fam in (4, 6), "listener family %d" % fam)
    # One canonical form per IPv4 listener (lr_proto.c), so equal listeners compare equal.
    c.check(fam != 4 or (not any(raw[4:]) and not flags & LISTENER_V6ONLY),
            "non-canonical IPv4 listener")
    return {"family": fam, "flags": flags, "port": port, "addr": _addr_str(fam, raw),
            "v6only": bool(flags & LISTENER_V6ONLY)}


def _family_port(c, what):
    fam, port = c.u8(), c.u16()
    c.check(fam in (4, 6) and port != 0, "%s family %d port %d" % (what, fam, port))
    return {"family": fam, "port": port}


def decode(ftype, payload, strict=False):
    """A dict of the message's fields (plus "type" and "name"); raises
    ProtoError for a known type whose payload is too short. Unknown types
    decode to {"type", "name": "unknown", "raw"}. "token" is the auth
    block (OPEN_RESULT: b"" when the payload ends after the text).

    strict: also ProtoError for every field value lr_proto.c's decoders
    refuse (strings too long or with a NUL, a listener family other than
    4/6 or a non-canonical IPv4 one, PORT_STATE above 4, more than 1024
    REVERSE_SET ports or a port 0, OPEN and REVERSE_OPEN family/port, a
    CHALLENGE short of its nonce): what lorelay itself would not decode."""
    c = _Cur(payload, strict)
    m = {"type": ftype, "name": MSG_NAMES.get(ftype, "unknown")}
    if ftype in (HELLO, WELCOME):
        m.update(token=c.auth(), guest_or_host_name=c.str8(NAME_CAP),
                 version=c.str8(VERSION_CAP))
        m.update(caps=0 if c.at_end() else c.u8())
    elif ftype == ERROR:
        m.update(code=c.u32(), text=c.text16())
    elif ftype == OPEN_RESULT:
        m.update(code=c.u32(), text=c.text16())
        m.update(token=b"" if c.at_end() else c.auth())
    elif ftype == CHALLENGE:
        m.update(nonce=c.take(NONCE_LEN))
    elif ftype in (LISTENER_ADD, LISTENER_DEL):
        m.update(_listener(c))
        if ftype == LISTENER_ADD and not c.at_end():
            pid = c.u32()
            cmd = c.take(c.u16())
            c.check(b"\0" not in cmd, "LISTENER_ADD command with a NUL")
            m.update(pid=pid, command=cmd)
    elif ftype == SYNC_DONE:
        pass
    elif ftype == PORT_STATE:
        m.update(listener=_listener(c))
        st = c.u8()
        m.update(state=st, state_name=PORT_STATES.get(st, "state-%d" % st), host_port=c.u16())
        c.check(st in PORT_STATES, "PORT_STATE state %d" % st)
    elif ftype == REVERSE_SET:
        flags, n = c.u8(), c.u16()
        c.check(n <= REVERSE_MAX_PORTS, "REVERSE_SET of %d ports" % n)
        ports = []
        for _ in range(n):
            ports.append(c.u16())
            c.check(ports[-1] != 0, "REVERSE_SET port 0")
        m.update(flags=flags, ports=ports)
    elif ftype == REVERSE_OPEN:
        m.update(id=c.u32())
        m.update(_family_port(c, "REVERSE_OPEN"))
    elif ftype == REVERSE_FAIL:
        m.update(id=c.u32(), code=c.u32(), text=c.text16())
    elif ftype in (PING, PONG):
        m.update(nonce=c.u64())
    elif ftype == OPEN:
        m.update(token=c.auth())
        m.update(_family_port(c, "OPEN"))
        m.update(flags=0 if c.at_end() else c.u8())
        m.update(stream_id=c.u32() if len(c.b) - c.o >= 4 else 0)
    elif ftype == STREAM_CLOSE:
        m.update(id=c.u32(), kind=c.u8(), bytes=c.u64())
        c.check(m["id"] != 0, "STREAM_CLOSE for stream 0")
    elif ftype == ATTACH:
        m.update(token=c.auth(), id=c.u32())
        m.update(stream_id=c.u32() if len(c.b) - c.o >= 4 else 0)
    else:
        m.update(raw=bytes(payload))
    return m


class Frame:
    __slots__ = ("type", "flags", "payload", "t")

    def __init__(self, ftype, flags, payload):
        self.type, self.flags, self.payload = ftype, flags, payload
        self.t = time.monotonic()

    @property
    def name(self):
        return MSG_NAMES.get(self.type, "unknown(%d)" % self.type)

    def msg(self):
        return decode(self.type, self.payload)

    def __repr__(self):
        return "<Frame %s len=%d>" % (self.name, len(self.payload))


class FrameParser:
    """Incremental frame splitter: feed() bytes, take frames()."""

    def __init__(self, max_payload=MAX_PAYLOAD):
        self.buf = bytearray()
        self.max_payload = max_payload

    def feed(self, b):
        self.buf += b

    def next(self):
        """One complete frame, or None; ProtoError on an oversized header."""
        if len(self.buf) < HDR_LEN:
            return None
        ftype, flags, n = FRAME_HDR.unpack_from(self.buf)
        if n > self.max_payload:
            raise ProtoError("frame %d announces %d bytes" % (ftype, n))
        if len(self.buf) < HDR_LEN + n:
            return None
        f = Frame(ftype, flags, bytes(self.buf[HDR_LEN:HDR_LEN + n]))
        del self.buf[:HDR_LEN + n]
        return f

    def frames(self):
        """Every complete frame buffered (one pass, one trim)."""
        out = []
        off, buf = 0, self.buf
        while len(buf) - off >= HDR_LEN:
            ftype, flags, n = FRAME_HDR.unpack_from(buf, off)
            if n > self.max_payload:
                del buf[:off]
                raise ProtoError("frame %d announces %d bytes" % (ftype, n))
            if len(buf) - off < HDR_LEN + n:
                break
            out.append(Frame(ftype, flags, bytes(buf[off + HDR_LEN:off + HDR_LEN + n])))
            off += HDR_LEN + n
        del buf[:off]
        return out


# ---------------------------------------------------------------- streams

class PeerClosed(Exception):
    pass


class Stream:
    """One protocol stream over a connected socket (either side)."""

    def __init__(self, sock, kind=None, version=PROTO_VERSION):
        self.sock = sock
        self.kind = kind
        self.version = version
        self.parser = FrameParser()
        self.peer_preamble = None
        self._lock = threading.Lock()
        self._reader = None
        self._stop = False
        self.frames = []          # background reader: every frame, in order
        self.counts = {}          # background reader: type -> count
        self.ended = None         # background reader: "eof" / "reset" / "error: ..."
        self.ended_at = None
        self.autopong = False
        self.bytes_in = 0
        self.keep = True          # background reader: keep frames (False: count only)

    # -- sending

    def send(self, data, timeout=None):
        """sendall with an optional overall deadline; raises PeerClosed when
        the peer closed or reset the stream, socket.timeout at the deadline."""
        mv = memoryview(bytes(data))
        deadline = None if timeout is None else time.monotonic() + timeout
        old = self.sock.gettimeout()
        try:
            while mv:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout("send deadline")
                    self.sock.settimeout(min(left, 1.0))
                try:
                    n = self.sock.send(mv[:1 << 16])
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError) as e:
                    raise PeerClosed(repr(e))
                mv = mv[n:]
        finally:
            self.sock.settimeout(old)

    def send_frame(self, ftype, payload=b"", flags=0):
        self.send(frame(ftype, payload, flags))

    def send_preamble(self, kind=None, version=None):
        self.send(preamble(kind if kind is not None else self.kind,
                           version if version is not None else self.version))

    # -- receiving (foreground; do not mix with the background reader)

    def recv_exact(self, n, timeout=5.0):
        """n bytes: first what recv_frame read past its last frame (the
        relayed bytes behind an OPEN_RESULT often come in the same read),
        then from the socket."""
        out = bytearray(self.parser.buf[:n])
        del self.parser.buf[:n]
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("recv_exact(%d): got %d" % (n, len(out)))
            self.sock.settimeout(left)
            try:
                b = self.sock.recv(n - len(out))
            except ConnectionResetError as e:
                raise PeerClosed(repr(e))
            if not b:
                raise PeerClosed("EOF after %d of %d bytes" % (len(out), n))
            out += b
        return bytes(out)

    def recv_preamble(self, timeout=5.0):
        self.peer_preamble = decode_preamble(self.recv_exact(8, timeout))
        return self.peer_preamble

    def recv_frame(self, timeout=5.0):
        """The next frame (Frame); PeerClosed at EOF, socket.timeout."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.parser.next()
            if f is not None:
                return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no frame within %.1fs" % timeout)
            self.sock.settimeout(left)
            try:
                b = self.sock.recv(65536)
            except ConnectionResetError as e:
                raise PeerClosed(repr(e))
            if not b:
                raise PeerClosed("EOF")
            self.bytes_in += len(b)
            self.parser.feed(b)

    def recv_msg(self, want=None, timeout=5.0, skip=(PING, PONG)):
        """Next decoded message, skipping PING (answered) and PONG; with
        want, skips other types until that one arrives."""
        deadline = time.monotonic() + timeout
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.type == PING:
                self.send(frame(PONG, f.payload))
            if f.type in skip and f.type != want:
                continue
            if want is None or f.type == want:
                return f.msg()

    def wait_closed(self, timeout=5.0, max_bytes=1 << 30):
        """Reads and discards until the peer closes. Returns ("eof"|"reset",
        bytes) or ("open", bytes) if still open at the deadline."""
        deadline = time.monotonic() + timeout
        n = 0
        while n < max_bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                return "open", n
            self.sock.settimeout(min(left, 0.5))
            try:
                b = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return "reset", n
            except OSError as e:
                return "error: %s" % e, n
            if not b:
                return "eof", n
            n += len(b)
        return "open", n

    # -- background reader

    def start_reader(self, autopong=True, keep=True):
        """Reads frames in a thread into self.frames/self.counts; answers
        PING with PONG if autopong. The test then inspects via wait_for()."""
        self.autopong = autopong
        self.keep = keep
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _read_loop(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                b = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                self._end("reset")
                return
            except OSError as e:
                self._end("error: %s" % e)
                return
            if not b:
                self._end("eof")
                return
            self.bytes_in += len(b)
            self.parser.feed(b)
            try:
                frs = self.parser.frames()
            except ProtoError as e:
                self._end("protocol: %s" % e)
                return
            with self._lock:
                for f in frs:
                    self.counts[f.type] = self.counts.get(f.type, 0) + 1
                    if self.keep:
                        self.frames.append(f)
            if self.autopong:
                pongs = b"".join(frame(PONG, f.payload) for f in frs if f.type == PING)
                if pongs:
                    try:
                        self.sock.sendall(pongs)
                    except OSError:
                        pass

    def _end(self, how):
        self.ended = how
        self.ended_at = time.monotonic()

    def count(self, ftype):
        with self._lock:
            return self.counts.get(ftype, 0)

    def frames_of(self, ftype):
        with self._lock:
            return [f for f in self.frames if f.type == ftype]

    def wait_for(self, pred, timeout=5.0, interval=0.01):
        """Polls pred(self) until true or the deadline; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred(self)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(interval)

    def stop_reader(self):
        self._stop = True
        if self._reader:
            self._reader.join(2)

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- FakeAgent

def _echo(sock):
    try:
        sock.settimeout(60)
        while True:
            b = sock.recv(1 << 16)
            if not b:
                break
            sock.sendall(b)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        sock.close()


class FakeAgent:
    """A fake lorelay-agent on a Unix socket path.

    data / reverse: what to do with data (OPEN) and reverse (ATTACH)
    streams: "echo" (OPEN_RESULT ok, then echo bytes), "refuse"
    (OPEN_RESULT refused, close), "hang" (answer the preamble, read the
    frame, never answer), "silent" (read nothing, answer nothing), or a
    callable(stream, msg_dict). Control streams are queued for the test:
    accept_control() takes the next one."""

    def __init__(self, path, name="fake-guest", version=PROTO_VERSION, agent_version="0-fake",
                 data="echo", reverse="hang", backlog=4096):
        self.path = path
        self.name = name
        self.version = version
        self.agent_version = agent_version
        self.data = data
        self.reverse = reverse
        self.backlog = backlog
        self._controls = queue.Queue()
        self._held = []
        self._lock = threading.Lock()
        self._stop = False
        self.stats = {"control": 0, "data": 0, "reverse": 0, "bad": 0}
        self.opens = []      # decoded OPEN messages
        self.attaches = []   # decoded ATTACH messages
        self.hellos = []     # decoded HELLO messages
        self.lsock = None
        self._thread = None

    def start(self):
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(self.path)
        self.lsock.listen(self.backlog)
        self.lsock.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def _bump(self, k):
        with self._lock:
            self.stats[k] = self.stats.get(k, 0) + 1

    def _accept_loop(self):
        while not self._stop:
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            st = Stream(c, version=self.version)
            try:
                ver, kind = st.recv_preamble(timeout=2.0)
            except (ProtoError, PeerClosed, OSError):
                self._bump("bad")
                st.close()
                continue
            st.kind = kind
            if kind == KIND_CONTROL:
                self._bump("control")
                self._controls.put(st)
            elif kind in (KIND_DATA, KIND_REVERSE):
                self._bump("data" if kind == KIND_DATA else "reverse")
                self._serve(st, self.data if kind == KIND_DATA else self.reverse)
            else:
                self._bump("bad")
                st.close()

    def _serve(self, st, mode):
        if mode == "silent":
            with self._lock:
                self._held.append(st)
            return
        try:
            st.send_preamble()
            f = st.recv_frame(timeout=2.0)
            m = f.msg()
        except (ProtoError, PeerClosed, OSError):
            st.close()
            return
        with self._lock:
            (self.opens if f.type == OPEN else self.attaches).append(m)
        if callable(mode):
            threading.Thread(target=mode, args=(st, m), daemon=True).start()
        elif mode == "hang":
            with self._lock:
                self._held.append(st)
        elif mode == "refuse":
            try:
                st.send_frame(OPEN_RESULT, enc_open_result(ERR_REFUSED, "refused by fake agent"))
            except (PeerClosed, OSError):
                pass
            st.close()
        elif mode == "echo":
            try:
                st.send_frame(OPEN_RESULT, enc_open_result(ERR_OK, ""))
                leftover = bytes(st.parser.buf)
                if leftover:
                    st.sock.sendall(leftover)
            except (PeerClosed, OSError):
                st.close()
                return
            threading.Thread(target=_echo, args=(st.sock,), daemon=True).start()
        else:
            st.close()

    def accept_control(self, timeout=10.0, handshake=True, listeners=(), sync=True,
                       name=None, agent_version=None):
        """The next control stream lorelayd opened. With handshake: answers
        its preamble, reads HELLO, sends WELCOME (name may be any bytes),
        then LISTENER_ADD for each (addr, port[, v6only]) and SYNC_DONE."""
        st = self._controls.get(timeout=timeout)
        if not handshake:
            return st
        st.send_preamble(KIND_CONTROL, self.version)
        hello = st.recv_msg(want=HELLO, timeout=5.0)
        self.hellos.append(hello)
        st.send(frame(WELCOME, enc_hello(b"", self.name if name is None else name,
                                         self.agent_version if agent_version is None
                                         else agent_version)))
        if listeners or sync:
            self.send_listing(st, listeners, sync)
        return st

    @staticmethod
    def send_listing(st, listeners, sync=True, add=True):
        """listeners: (addr, port[, v6only[, (pid, command)]])."""
        out = []
        for l in listeners:
            addr, port = l[0], l[1]
            v6only = l[2] if len(l) > 2 else False
            owner = l[3] if len(l) > 3 else None
            out.append(listener_frame(addr, port, v6only, add, owner))
        if sync:
            out.append(sync_done_frame())
        st.send(b"".join(out), timeout=30)

    def pending_controls(self):
        return self._controls.qsize()

    def held(self):
        with self._lock:
            return len(self._held)

    def close(self):
        self._stop = True
        if self.lsock:
            try:
                self.lsock.close()
            except OSError:
                pass
        if self._thread:
            self._thread.join(2)
        with self._lock:
            held, self._held = self._held, []
        for st in held:
            st.close()
        while True:
            try:
                self._controls.get_nowait().close()
            except queue.Empty:
                break
        try:
            os.unlink(self.path)
        except OSError:
            pass


# ---------------------------------------------------------------- FakeHost

class FakeHost:
    """The host side against a real agent: opens streams to its socket.
    addr is a Unix socket path or a (host, port) tuple."""

    def __init__(self, addr, version=PROTO_VERSION, token=b""):
        self.addr = addr
        self.version = version
        self.token = token

    def raw(self, timeout=5.0):
        """A connected socket, nothing sent."""
        if isinstance(self.addr, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET,
                              socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.addr)
        return s

    def stream(self, kind, send_preamble=True, timeout=5.0):
        st = Stream(self.raw(timeout), kind, self.version)
        if send_preamble:
            st.send_preamble()
        return st

    def control(self, name="fake-host", version="0-fake", timeout=5.0):
        """Preamble + HELLO; returns (stream, WELCOME dict). Note: a second
        control stream may displace the real host's."""
        st = self.stream(KIND_CONTROL)
        st.send(hello_frame(name, version, self.token))
        st.recv_preamble(timeout)
        return st, st.recv_msg(want=WELCOME, timeout=timeout)

    def open_data(self, family, port, timeout=5.0, flags=0):
        """Preamble + OPEN (flags: OPEN_UDP for a UDP flow); returns
        (stream, OPEN_RESULT dict). After a 0 status the stream carries raw
        bytes (framed datagrams for a UDP flow)."""
        st = self.stream(KIND_DATA)
        st.send(frame(OPEN, enc_open(family, port, self.token) + (bytes([flags]) if flags else b"")))
        st.recv_preamble(timeout)
        return st, st.recv_frame(timeout).msg()

    def attach(self, rid, timeout=5.0):
        st = self.stream(KIND_REVERSE)
        st.send(frame(ATTACH, enc_attach(rid, self.token)))
        st.recv_preamble(timeout)
        return st, st.recv_frame(timeout).msg()

    def send_bad(self, payload, timeout=3.0, half_close=False):
        """Sends payload on a fresh connection and reads until the agent
        closes. Returns (reply bytes, how: "eof"/"reset"/"open")."""
        s = self.raw(timeout)
        reply = b""
        how = "open"
        try:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    b = s.recv(4096)
                except socket.timeout:
                    break
                except ConnectionResetError:
                    how = "reset"
                    break
                if not b:
                    how = "eof"
                    break
                reply += b
        finally:
            s.close()
        return reply, how


def readable(sock, timeout=0.0):
    r, _, _ = select.select([sock], [], [], timeout)
    return bool(r)
