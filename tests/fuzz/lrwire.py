"""The lorelay wire protocol (docs/protocol.md, version 1) in Python.

Written from the contract's table (plus lr_proto.c's one canonical form
for an IPv4 listener), not translated from the C encoders, so that the seed
corpus generator and the stateful fuzzer speak the protocol as a second
implementation would: if the C code and this module disagree, the checks of
stateful_agent.py (which decodes everything lorelayd sends) show it.

Stdlib only.
"""

import struct

VERSION = 1
MAGIC = b"LRLY"
HDR_LEN = 8
MAX_PAYLOAD = 4096
REVERSE_MAX_PORTS = 1024

KIND_CONTROL, KIND_DATA, KIND_REVERSE = 1, 2, 3

HELLO = 1
WELCOME = 2
ERROR = 3
LISTENER_ADD = 10
LISTENER_DEL = 11
SYNC_DONE = 12
PORT_STATE = 13
REVERSE_SET = 14
REVERSE_OPEN = 15
REVERSE_FAIL = 16
PING = 20
PONG = 21
OPEN = 30
OPEN_RESULT = 31
ATTACH = 32

NAMES = {
    HELLO: "HELLO", WELCOME: "WELCOME", ERROR: "ERROR",
    LISTENER_ADD: "LISTENER_ADD", LISTENER_DEL: "LISTENER_DEL", SYNC_DONE: "SYNC_DONE",
    PORT_STATE: "PORT_STATE", REVERSE_SET: "REVERSE_SET", REVERSE_OPEN: "REVERSE_OPEN",
    REVERSE_FAIL: "REVERSE_FAIL", PING: "PING", PONG: "PONG", OPEN: "OPEN",
    OPEN_RESULT: "OPEN_RESULT", ATTACH: "ATTACH",
}

ERR_REFUSED, ERR_UNREACHABLE, ERR_TIMEOUT, ERR_AUTH, ERR_VERSION, ERR_PROTOCOL, ERR_INTERNAL = \
    range(1, 8)

V6ONLY = 0x01
REVERSE_IPV6 = 0x01


class DecodeError(ValueError):
    pass


# ---------------------------------------------------------------- encoding

def preamble(kind, version=VERSION):
    return MAGIC + struct.pack(">BBH", version, kind, 0)


def frame(mtype, payload=b"", flags=0, length=None):
    """A frame; `length` overrides the header's length field (for mutation)."""
    n = len(payload) if length is None else length
    return struct.pack(">HHI", mtype, flags, n) + payload


def _s8(b):
    if isinstance(b, str):
        b = b.encode()
    if len(b) > 255:
        raise ValueError("string longer than 255 bytes")
    return bytes([len(b)]) + b


def _s16(b):
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">H", len(b)) + b


def hello_payload(token=b"", name="", version=""):
    return _s8(token) + _s8(name) + _s8(version)


def hello(token=b"", name="host", version="0.1.0", mtype=HELLO):
    return frame(mtype, hello_payload(token, name, version))


def welcome(name="guest", version="0.1.0"):
    return frame(WELCOME, hello_payload(b"", name, version))


def code_text(code, text=""):
    return struct.pack(">I", code) + _s16(text)


def error(code, text="", mtype=ERROR):
    return frame(mtype, code_text(code, text))


def open_result(status, text=""):
    return error(status, text, OPEN_RESULT)


def listener_payload(family, port, addr=None, flags=0):
    """addr: 4 or 16 bytes in network order (None: the wildcard)."""
    if addr is None:
        addr = b""
    addr = bytes(addr) + bytes(16 - len(addr))
    return struct.pack(">BBH", family, flags, port) + addr


def listener(mtype, family, port, addr=None, flags=0):
    return frame(mtype, listener_payload(family, port, addr, flags))


def port_state(family, port, addr, flags, state, host_port):
    return frame(PORT_STATE, listener_payload(family, port, addr, flags) +
                 struct.pack(">BH", state, host_port))


def reverse_set(ports, flags=REVERSE_IPV6):
    return frame(REVERSE_SET, struct.pack(">BH", flags, len(ports)) +
                 b"".join(struct.pack(">H", p) for p in ports))


def reverse_open(rid, family, port):
    return frame(REVERSE_OPEN, struct.pack(">IBH", rid, family, port))


def reverse_fail(rid, code, text=""):
    return frame(REVERSE_FAIL, struct.pack(">I", rid) + code_text(code, text))


def ping(nonce, mtype=PING):
    return frame(mtype, struct.pack(">Q", nonce))


def open_(token, family, port):
    return frame(OPEN, _s8(token) + struct.pack(">BH", family, port))


def attach(token, rid):
    return frame(ATTACH, _s8(token) + struct.pack(">I", rid))


def empty(mtype=SYNC_DONE):
    return frame(mtype)


# ---------------------------------------------------------------- decoding

def parse_preamble(b):
    """(version, kind) from 8 bytes; DecodeError when it is not ours."""
    if len(b) < 8 or b[:4] != MAGIC:
        raise DecodeError("bad magic %r" % bytes(b[:8]))
    version, kind, zero = struct.unpack(">BBH", b[4:8])
    return version, kind


def split_frames(buf):
    """Whole frames at the start of buf: ([(type, flags, payload)], rest).
    DecodeError for a length over the maximum."""
    out = []
    off = 0
    while len(buf) - off >= HDR_LEN:
        t, fl, n = struct.unpack(">HHI", buf[off:off + HDR_LEN])
        if n > MAX_PAYLOAD:
            raise DecodeError("frame type %d announces %d bytes" % (t, n))
        if len(buf) - off - HDR_LEN < n:
            break
        out.append((t, fl, bytes(buf[off + HDR_LEN:off + HDR_LEN + n])))
        off += HDR_LEN + n
    return out, buf[off:]


class _Reader:
    def __init__(self, b):
        self.b, self.off = b, 0

    def take(self, n):
        if len(self.b) - self.off < n:
            raise DecodeError("payload too short")
        v = self.b[self.off:self.off + n]
        self.off += n
        return v

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def string(self, lenlen, cap):
        n = self.u8() if lenlen == 1 else self.u16()
        s = self.take(n)
        if n >= cap or b"\0" in s:
            raise DecodeError("bad string")
        return s


def _listener(r):
    family, flags, port = r.u8(), r.u8(), r.u16()
    addr = r.take(16)
    if family not in (4, 6):
        raise DecodeError("family %d" % family)
    if family == 4 and (any(addr[4:]) or flags & V6ONLY):
        raise DecodeError("non-canonical IPv4 listener")
    return {"family": family, "flags": flags, "port": port, "addr": addr}


def decode(mtype, payload):
    """Decodes a known message into a dict; DecodeError when it does not
    decode, KeyError for an unknown type."""
    r = _Reader(payload)
    if mtype in (HELLO, WELCOME):
        tlen = r.u8()
        return {"token": r.take(tlen), "name": r.string(1, 128), "version": r.string(1, 32)}
    if mtype in (ERROR, OPEN_RESULT):
        return {"code": r.u32(), "text": r.string(2, 512)}
    if mtype in (LISTENER_ADD, LISTENER_DEL):
        return _listener(r)
    if mtype == SYNC_DONE:
        return {}
    if mtype == PORT_STATE:
        d = _listener(r)
        d["state"], d["host_port"] = r.u8(), r.u16()
        if d["state"] > 3:
            raise DecodeError("state %d" % d["state"])
        return d
    if mtype == REVERSE_SET:
        flags, n = r.u8(), r.u16()
        if n > REVERSE_MAX_PORTS:
            raise DecodeError("%d ports" % n)
        ports = [r.u16() for _ in range(n)]
        if 0 in ports:
            raise DecodeError("port 0")
        return {"flags": flags, "ports": ports}
    if mtype == REVERSE_OPEN:
        d = {"id": r.u32(), "family": r.u8(), "port": r.u16()}
        if d["family"] not in (4, 6) or d["port"] == 0:
            raise DecodeError("bad REVERSE_OPEN")
        return d
    if mtype == REVERSE_FAIL:
        return {"id": r.u32(), "code": r.u32(), "text": r.string(2, 512)}
    if mtype in (PING, PONG):
        return {"nonce": r.u64()}
    if mtype == OPEN:
        tlen = r.u8()
        d = {"token": r.take(tlen), "family": r.u8(), "port": r.u16()}
        if d["family"] not in (4, 6) or d["port"] == 0:
            raise DecodeError("bad OPEN")
        return d
    if mtype == ATTACH:
        tlen = r.u8()
        return {"token": r.take(tlen), "id": r.u32()}
    raise KeyError(mtype)
