#!/usr/bin/env python3
"""Writes the seed corpus of the libFuzzer targets: tests/fuzz/corpus/<target>/.

    python3 tests/fuzz/gen_corpus.py          # (re)write the generated seeds
    python3 tests/fuzz/gen_corpus.py --check  # exit 1 if any differs (CI, review)

Seeds are small, valid examples of everything each decoder reads (every
frame type, every address kind, a full config...) plus a few near misses,
so the fuzzer starts past the first field checks. Generated files are named
by what they are; regression inputs (files named crash-*, leak-*,
timeout-* or regress-*) are kept by hand next to them and never touched
here; any other file is a seed the generator no longer writes, removed (or,
with --check, reported). The frames come from tests/lrpeer.py, an
implementation of the contract independent of the C encoders; every valid
seed is checked with its strict decoder, every near miss must fail it.
"""

import argparse
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: lrpeer

import lrpeer as P  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")
KEPT_PREFIXES = ("crash-", "leak-", "timeout-", "regress-")

V6_OTHER = "fd00::42"
# Auth blocks: what a keyed host (nonce, MAC) and agent (MAC) send. The
# bytes are arbitrary: lrpeer computes no MAC, and the decoders do not care.
HOST_AUTH = bytes(range(1, P.AUTH_HOST_LEN + 1))
AGENT_AUTH = bytes(range(0x80, 0x80 + P.AUTH_AGENT_LEN))
NONCE = bytes(range(0xA0, 0xA0 + P.NONCE_LEN))


def f(ftype, payload=b"", flags=0):
    return P.frame(ftype, payload, flags)


def hello(token=b"", name="host", version="0.1.0", ftype=P.HELLO):
    return f(ftype, P.enc_hello(token, name, version))


def listener(ftype, addr, port, v6only=False, family=None):
    return f(ftype, P.enc_listener(addr, port, v6only, family))


def open_result(code, text="", token=b""):
    return f(P.OPEN_RESULT, P.enc_open_result(code, text, token))


def frames_seeds():
    """(valid, near misses): each a name -> bytes dict."""
    valid = {
        "hello": hello(),
        "hello-keyed": hello(HOST_AUTH, "build-host"),
        "welcome": hello(b"", "guest-vm", ftype=P.WELCOME),
        "welcome-keyed": hello(AGENT_AUTH, "guest-vm", ftype=P.WELCOME),
        "error-auth": f(P.ERROR, P.enc_error(P.ERR_AUTH, "authentication failed")),
        "error-version": f(P.ERROR, P.enc_error(P.ERR_VERSION, "")),
        "error-busy": f(P.ERROR, P.enc_error(P.ERR_BUSY, "another host holds the control stream")),
        "challenge": f(P.CHALLENGE, P.enc_challenge(NONCE)),
        "listener-add-v4-any": listener(P.LISTENER_ADD, "0.0.0.0", 8000),
        "listener-add-v4-loop": listener(P.LISTENER_ADD, "127.0.0.1", 8080),
        "listener-add-v6-dual": listener(P.LISTENER_ADD, "::", 3000),
        "listener-add-v6only": listener(P.LISTENER_ADD, "::", 3001, v6only=True),
        "listener-add-v6-loop": listener(P.LISTENER_ADD, "::1", 5432),
        "listener-del-v4-other": listener(P.LISTENER_DEL, "10.1.2.3", 22),
        "listener-del-v6-other": listener(P.LISTENER_DEL, V6_OTHER, 443),
        "sync-done": f(P.SYNC_DONE),
        "port-state-conflict": f(P.PORT_STATE, P.enc_port_state(
            P.enc_listener("0.0.0.0", 8000), 1, 8000)),
        "port-state-remapped": f(P.PORT_STATE, P.enc_port_state(
            P.enc_listener("::", 3000), 2, 41234)),
        "port-state-denied": f(P.PORT_STATE, P.enc_port_state(
            P.enc_listener("0.0.0.0", 22), 4, 0)),
        "reverse-set": f(P.REVERSE_SET, P.enc_reverse_set([5432, 6379, 8080])),
        "reverse-set-empty": f(P.REVERSE_SET, P.enc_reverse_set([], 0)),
        "reverse-set-max": f(P.REVERSE_SET,
                             P.enc_reverse_set(list(range(1, P.REVERSE_MAX_PORTS + 1)))),
        "reverse-open": f(P.REVERSE_OPEN, P.enc_reverse_open(7, 4, 5432)),
        "reverse-open-v6": f(P.REVERSE_OPEN, P.enc_reverse_open(0xFFFFFFFF, 6, 6379)),
        "reverse-fail": f(P.REVERSE_FAIL, P.enc_reverse_fail(7, P.ERR_REFUSED,
                                                             "connection refused")),
        "ping": f(P.PING, P.enc_ping(0x0123456789ABCDEF)),
        "pong": f(P.PONG, P.enc_ping(1)),
        "open": f(P.OPEN, P.enc_open(4, 8000)),
        "open-keyed-v6": f(P.OPEN, P.enc_open(6, 3000, HOST_AUTH)),
        "open-udp": f(P.OPEN, P.enc_open(4, 5353) + bytes([P.OPEN_UDP])),
        "open-stream-id": f(P.OPEN, P.enc_open(6, 8080, flags=0, stream_id=0xA0B0C0D0)),
        "stream-close-fin": f(P.STREAM_CLOSE, P.enc_stream_close(7, P.CLOSE_FIN, 300000)),
        "stream-close-reset": f(P.STREAM_CLOSE, P.enc_stream_close(0xFFFFFFFF, P.CLOSE_RESET)),
        "hello-caps-udp": f(P.HELLO, P.enc_hello(b"", "host", "0.1.0") + bytes([P.CAP_UDP])),
        "listener-udp": f(P.LISTENER_ADD, P.enc_listener("::", 5353, flags=P.LISTENER_UDP)),
        "open-result-ok": open_result(0),
        "open-result-no-auth-block": f(P.OPEN_RESULT, P.enc_open_result(0, "", None)),
        "open-result-keyed": open_result(0, "", AGENT_AUTH),
        "open-result-refused": open_result(P.ERR_REFUSED, "connection refused"),
        "attach": f(P.ATTACH, P.enc_attach(42)),
        "attach-stream-id": f(P.ATTACH, P.enc_attach(44, stream_id=9)),
        "attach-keyed": f(P.ATTACH, P.enc_attach(43, HOST_AUTH)),
        # a newer peer's longer payloads, which are accepted
        "unknown-type": f(999, b"future"),
        "flags-set": f(P.PING, P.enc_ping(5), flags=0x8000),
        "longer-payload": f(P.REVERSE_OPEN, P.enc_reverse_open(1, 4, 80) + b"newer"),
        "challenge-longer": f(P.CHALLENGE, P.enc_challenge(NONCE) + b"newer"),
        "max-payload": f(P.ERROR, P.enc_error(P.ERR_PROTOCOL, "x" * (P.TEXT_CAP - 1)) +
                         bytes(P.MAX_PAYLOAD - 6 - (P.TEXT_CAP - 1))),
    }
    valid["control-session"] = (
        f(P.CHALLENGE, P.enc_challenge(NONCE)) + hello(AGENT_AUTH, "g", "1", P.WELCOME) +
        listener(P.LISTENER_ADD, "0.0.0.0", 8000) + listener(P.LISTENER_ADD, "::", 8000) +
        f(P.SYNC_DONE) + f(P.PING, P.enc_ping(9)) + f(P.REVERSE_OPEN, P.enc_reverse_open(1, 4, 5432)))
    miss = {
        "short-listener": f(P.LISTENER_ADD, P.enc_listener("0.0.0.0", 80)[:19]),
        "v4-nonzero-tail": listener(P.LISTENER_ADD, "::1", 80, family=4),
        "string-with-nul": f(P.ERROR, struct.pack(">IH", 6, 3) + b"a\0b"),
        "reverse-set-too-many": f(P.REVERSE_SET, struct.pack(">BH", 1, P.REVERSE_MAX_PORTS + 1)),
        "challenge-short": f(P.CHALLENGE, NONCE[:31]),
        "auth-block-short": f(P.OPEN, bytes([P.AUTH_HOST_LEN]) + HOST_AUTH[:10]),
        "stream-close-id0": f(P.STREAM_CLOSE, P.enc_stream_close(0, P.CLOSE_FIN, 1)),
        "stream-close-short": f(P.STREAM_CLOSE, P.enc_stream_close(3, P.CLOSE_FIN, 1)[:12]),
        "open-result-auth-short": f(P.OPEN_RESULT, P.enc_error(0, "") + bytes([P.AUTH_AGENT_LEN])),
        "port-state-5": f(P.PORT_STATE, P.enc_port_state(P.enc_listener("0.0.0.0", 80), 5, 80)),
    }
    too_big = {"too-big": P.frame_header(P.PING, P.MAX_PAYLOAD + 1)}
    for name, data in valid.items():
        check_frames(name, data, True)
    for name, data in miss.items():
        check_frames(name, data, False)
    return dict(valid, **miss, **too_big)


def check_frames(name, data, valid):
    """Every frame in data decodes (valid), or one does not (a near miss)."""
    parser = P.FrameParser()
    parser.feed(data)
    frames = parser.frames()
    if not frames or parser.buf:
        raise ValueError("%s: not whole frames" % name)
    try:
        for fr in frames:
            P.decode(fr.type, fr.payload, strict=True)
    except P.ProtoError as e:
        if valid:
            raise ValueError("%s: a valid seed does not decode: %s" % (name, e))
        return
    if not valid:
        raise ValueError("%s: a near miss decodes" % name)


def auth_seeds():
    """Byte 0: stream kind (% 3: control, data, reverse) and the checking
    side's key (/ 3 % 3: the same, another, none); then frames."""
    def seed(kind, keymode, *frames):
        return bytes([keymode * 3 + kind - 1]) + b"".join(frames)

    challenge = f(P.CHALLENGE, P.enc_challenge(NONCE))
    return {
        "control-keyed": seed(P.KIND_CONTROL, 0, challenge, hello(HOST_AUTH, "host"),
                              hello(AGENT_AUTH, "guest", ftype=P.WELCOME)),
        "data-keyed-udp": seed(P.KIND_DATA, 0, challenge,
                               f(P.OPEN, P.enc_open(4, 5353, HOST_AUTH) + bytes([P.OPEN_UDP])),
                               open_result(0, "", AGENT_AUTH)),
        "data-keyed": seed(P.KIND_DATA, 0, challenge, f(P.OPEN, P.enc_open(4, 8000, HOST_AUTH)),
                           open_result(0, "", AGENT_AUTH)),
        "reverse-keyed": seed(P.KIND_REVERSE, 0, challenge,
                              f(P.ATTACH, P.enc_attach(7, HOST_AUTH)),
                              open_result(0, "", AGENT_AUTH)),
        "refused-keyed": seed(P.KIND_DATA, 0, f(P.OPEN, P.enc_open(6, 1, HOST_AUTH)),
                              open_result(P.ERR_REFUSED, "refused", AGENT_AUTH)),
        "other-key": seed(P.KIND_CONTROL, 1, hello(HOST_AUTH), f(P.OPEN, P.enc_open(4, 80, HOST_AUTH))),
        "keyless": seed(P.KIND_DATA, 2, hello(), f(P.OPEN, P.enc_open(4, 80)),
                        f(P.ATTACH, P.enc_attach(1)),
                        f(P.OPEN_RESULT, P.enc_open_result(0, "", None))),
        "wrong-lengths": seed(P.KIND_DATA, 0, f(P.OPEN, P.enc_open(4, 80, HOST_AUTH[:-1])),
                              f(P.OPEN, P.enc_open(4, 80, HOST_AUTH + b"x")),
                              open_result(0, "", AGENT_AUTH[:-1]),
                              open_result(0, "", AGENT_AUTH + b"x"),
                              hello(AGENT_AUTH, "role-swap"), hello(HOST_AUTH, ftype=P.WELCOME)),
    }


def rxbuf_seeds():
    """Byte 0 bit 0: starts with a preamble; bytes 1-2: chunking seed."""
    def seed(chunking, stream, preamble=True):
        return bytes([1 if preamble else 0]) + struct.pack(">H", chunking) + stream

    ctl = (hello(b"", "guest", ftype=P.WELCOME) + listener(P.LISTENER_ADD, "0.0.0.0", 8000) +
           listener(P.LISTENER_ADD, "::", 3000, v6only=True) + f(P.SYNC_DONE) +
           f(P.PING, P.enc_ping(1)) + f(777, b"skip me"))
    return {
        "control": seed(1, P.preamble(P.KIND_CONTROL) + ctl),
        "control-bytewise": seed(0, P.preamble(P.KIND_CONTROL) + ctl),
        "keyed-agent-first": seed(6, P.preamble(P.KIND_ANY, flags=P.PREAMBLE_KEYED) +
                                  f(P.CHALLENGE, P.enc_challenge(NONCE)) +
                                  hello(AGENT_AUTH, "guest", ftype=P.WELCOME) + ctl),
        "data-with-rest": seed(7, P.preamble(P.KIND_DATA) + open_result(0) +
                               b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "data-keyed-with-rest": seed(9, P.preamble(P.KIND_DATA, flags=P.PREAMBLE_KEYED) +
                                     open_result(0, "", AGENT_AUTH) + b"\x16\x03\x01 tls"),
        "reverse-attach": seed(3, P.preamble(P.KIND_REVERSE) + f(P.ATTACH, P.enc_attach(5))),
        "refused": seed(2, P.preamble(P.KIND_DATA) + open_result(P.ERR_REFUSED, "refused")),
        "frames-only": seed(5, ctl, preamble=False),
        "bad-magic-http": seed(1, b"GET / HTTP/1.0\r\n\r\n"),
        "version-1": seed(1, P.preamble(P.KIND_CONTROL, version=1) +
                          f(P.ERROR, P.enc_error(P.ERR_VERSION, "v1"))),
        "version-3": seed(1, P.preamble(P.KIND_CONTROL, version=3, flags=0xFF)),
        "bad-kind": seed(1, P.preamble(9)),
        "short-preamble": seed(1, P.preamble(P.KIND_CONTROL)[:5]),
        "max-frame": seed(11, P.preamble(P.KIND_DATA) +
                          f(P.OPEN_RESULT, bytes(P.MAX_PAYLOAD)) + b"tail"),
        "too-big": seed(4, P.preamble(P.KIND_CONTROL) + f(P.PING, P.enc_ping(3)) +
                        P.frame_header(P.PING, 0xFFFFFFFF)),
    }


def addr_seeds():
    items = [
        "unix:/run/lorelay/netns-web.sock", "unix:relative.sock", "unix:/a:b:c",
        "tcp:127.0.0.1:7000", "tcp:localhost:7000", "tcp:[::1]:7000", "tcp:[0:0::1]:1",
        "tcp:[::ffff:10.0.0.1]:65535", "tcp:0.0.0.0:0", "tcp:[fe80::1%eth0]:80",
        "tcp:::1:80", "tcp:1.2.3.4:65536",
        "vsock:3:50505", "vsock:any:5000", "vsock:-1:1", "vsock:4294967295:4294967295",
        "vsock:2:4294967296",
        "fc:/var/lib/fc/v.sock:1024", "fc:/a:b/c.sock:52", "fc:" + "p" * 107 + ":1",
        "hvsock:parent:50505", "hvsock:any:1", "hvsock:loopback:2", "hvsock:children:3",
        "hvsock:{A42E7CDA-D03F-480C-9CC2-A4DE20ABB878}:50505",
        "hvsock:a42e7cda-d03f-480c-9cc2-a4de20abb878:7",
        "A42E7CDA-D03F-480C-9CC2-A4DE20ABB878", "::ffff:127.0.0.1", "192.168.0.1",
        "udp:1.2.3.4:5", "", "unix:",
    ]
    return {"%02d" % i: s.encode() for i, s in enumerate(items)}


def fc_seeds():
    return {
        "ok": b"OK 1073741824\n", "ok-zero": b"OK 0\n", "ok-max": b"OK 4294967295\n",
        "ok-then-data": b"OK 1073741825\nLRLY\x01\x01\x00\x00",
        "partial": b"OK 10737", "overflow": b"OK 4294967296\n", "err": b"ERR no listener\n",
        "leading-zeros": b"OK 0000000000000000000000000007\n",
        "no-digits": b"OK \n", "long": b"OK " + b"1" * 40,
    }


def config_seeds():
    full = ("# lorelay.ini\n[lorelay]\nlocalhostForwarding = true\nipv6 = false\n"
            "ignorePorts = 22, 5000-5010\nreversePorts = 5432,6379\nremapOnConflict = yes\n"
            "logLevel = debug\nscanIntervalMs = 100\nconflictRetryMs = 1000\n")
    return {
        "full": full.encode(),
        "crlf-indented": b"[lorelay]\r\n  ipv6 = off\r\n\tlogLevel=warn\r\n",
        "other-section": b"[wsl2]\nmemory=4GB\n[lorelay]\nunknownKey = 1\n",
        "bad-values": (b"[lorelay]\nipv6 = flase\nscanIntervalMs = 5\nignorePorts = 10-1\n"
                       b"logLevel = loud\nconflictRetryMs = -1\n"),
        "no-section": b"ipv6 = true\n",
        "not-ini": b"this is not a key value line\n",
        "long-line": b"[lorelay]\nignorePorts = " + b",".join(b"%d" % p for p in range(1, 70)) +
                     b"\n",
        "comment-inline": b"[lorelay]\nipv6 = true ; comment\n; whole line\n",
        "portset": b"22,8000-8010, 9000 - 9005",
        "portset-64": ",".join(str(p) for p in range(1000, 1064)).encode(),
        "bool": b"Yes",
    }


def status_seeds():
    return {
        "json": b"status json\n", "table": b"status table\n", "bare": b"status\n",
        "dash-json-crlf": b"status --json\r\n", "unknown": b"stats\n",
        "no-newline": b"status json", "long": b"status " + b"x" * 80 + b"\n",
        "two-lines": b"status table\nstatus json\n", "nul": b"status\0json\n",
        "empty-line": b"\n",
        "watch-json": b"watch json\n", "watch": b"watch\n",
        "watch-then-more": b"watch --json\nstatus json\n",
    }


def hcs_seeds():
    wsl = ('{"Id":"C6A8E1F2-5C0B-4B8E-9A41-1B2C3D4E5F60","SystemType":"VirtualMachine",'
           '"Name":"C6A8E1F2-5C0B-4B8E-9A41-1B2C3D4E5F60","Owner":"WSL",'
           '"RuntimeId":"8E2A5B10-3C4D-4E5F-8A9B-0C1D2E3F4A5B","State":"Running"}')
    return {
        "wsl": ("[" + wsl + "]").encode(),
        "wsl-id-only": b'[{"Id":"{C6A8E1F2-5C0B-4B8E-9A41-1B2C3D4E5F60}","SystemType":'
                       b'"virtualmachine","Owner":"wsl"}]',
        "two-and-docker": ('[{"Id":"x","SystemType":"Container","Owner":"docker"},' + wsl +
                           "," + wsl + "]").encode(),
        "stopped": b'[{"Id":"C6A8E1F2-5C0B-4B8E-9A41-1B2C3D4E5F60","SystemType":'
                   b'"VirtualMachine","Owner":"WSL","State":"Stopped"}]',
        "bad-guid": b'[{"RuntimeId":"not-a-guid","SystemType":"VirtualMachine","Owner":"WSL"}]',
        "wrong-types": b'[{"RuntimeId":7,"SystemType":["VirtualMachine"],"Owner":null},1,"s"]',
        "empty": b"[]", "object": b'{"Owner":"WSL"}', "not-json": b"[{",
    }


def dgram_seeds():
    """Bytes 0-1: chunking seed; the rest: a UDP flow's framed datagrams."""
    def d(payload):
        return struct.pack(">H", len(payload)) + payload

    def seed(chunking, stream):
        return struct.pack(">H", chunking) + stream

    return {
        "dns-like": seed(1, d(b"\x12\x34\x01\x00" + b"q" * 30) + d(b"")),
        "many-small": seed(5, b"".join(d(bytes([i]) * i) for i in range(40))),
        "max": seed(3, d(b"m" * 65507) + d(b"after")),
        "oversized": seed(2, struct.pack(">H", 65508) + b"x" * 16),
        "truncated": seed(7, d(b"whole") + struct.pack(">H", 900) + b"part"),
        "half-header": seed(1, d(b"a") + b"\x01"),
    }


TARGETS = {
    "frames": frames_seeds, "auth": auth_seeds, "rxbuf": rxbuf_seeds, "dgram": dgram_seeds, "addr": addr_seeds, "fc": fc_seeds,
    "config": config_seeds, "status": status_seeds, "hcs": hcs_seeds,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if a generated seed is missing, differs or is "
                         "stale (no longer generated)")
    args = ap.parse_args()
    bad = 0
    for target, gen in TARGETS.items():
        d = os.path.join(CORPUS, target)
        if not args.check:
            os.makedirs(d, exist_ok=True)
        seeds = gen()
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if name in seeds or name.startswith(KEPT_PREFIXES):
                continue
            path = os.path.join(d, name)
            if args.check:
                print("stale: %s (no longer generated)" % os.path.relpath(path, HERE))
                bad += 1
            else:
                os.unlink(path)
        for name, data in sorted(seeds.items()):
            path = os.path.join(d, name)
            old = None
            if os.path.exists(path):
                with open(path, "rb") as fh:
                    old = fh.read()
            if old == data:
                continue
            if args.check:
                print("%s: %s" % ("differs" if old is not None else "missing",
                                  os.path.relpath(path, HERE)))
                bad += 1
                continue
            with open(path, "wb") as fh:
                fh.write(data)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
