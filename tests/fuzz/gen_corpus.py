#!/usr/bin/env python3
"""Writes the seed corpus of the libFuzzer targets: tests/fuzz/corpus/<target>/.

    python3 tests/fuzz/gen_corpus.py          # (re)write the generated seeds
    python3 tests/fuzz/gen_corpus.py --check  # exit 1 if any differs (CI, review)

Seeds are small, valid examples of everything each decoder reads (every
frame type, every address kind, a full config...) plus a few near misses,
so the fuzzer starts past the first field checks. Generated files are named
by what they are; regression inputs (files named crash-*, leak-*,
timeout-* or regress-*) are kept by hand next to them and never touched
here. The frames come from lrwire.py, an implementation of the contract
independent of the C encoders.
"""

import argparse
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lrwire as w  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")

V4_LOOP = bytes([127, 0, 0, 1])
V6_LOOP = bytes(15) + b"\x01"
V4_OTHER = bytes([10, 1, 2, 3])
V6_OTHER = bytes.fromhex("fd000000000000000000000000000042")


def frames_seeds():
    s = {
        "hello": w.hello(b"", "host", "0.1.0"),
        "hello-token": w.hello(b"s3cret-token", "build-host", "0.1.0"),
        "welcome": w.welcome("guest-vm", "0.1.0"),
        "error-auth": w.error(w.ERR_AUTH, "bad token"),
        "error-version": w.error(w.ERR_VERSION, ""),
        "listener-add-v4-any": w.listener(w.LISTENER_ADD, 4, 8000),
        "listener-add-v4-loop": w.listener(w.LISTENER_ADD, 4, 8080, V4_LOOP),
        "listener-add-v6-dual": w.listener(w.LISTENER_ADD, 6, 3000),
        "listener-add-v6only": w.listener(w.LISTENER_ADD, 6, 3001, None, w.V6ONLY),
        "listener-add-v6-loop": w.listener(w.LISTENER_ADD, 6, 5432, V6_LOOP),
        "listener-del-v4-other": w.listener(w.LISTENER_DEL, 4, 22, V4_OTHER),
        "listener-del-v6-other": w.listener(w.LISTENER_DEL, 6, 443, V6_OTHER),
        "sync-done": w.empty(w.SYNC_DONE),
        "port-state-conflict": w.port_state(4, 8000, None, 0, 1, 8000),
        "port-state-remapped": w.port_state(6, 3000, None, 0, 2, 41234),
        "reverse-set": w.reverse_set([5432, 6379, 8080]),
        "reverse-set-empty": w.reverse_set([], 0),
        "reverse-open": w.reverse_open(7, 4, 5432),
        "reverse-open-v6": w.reverse_open(0xFFFFFFFF, 6, 6379),
        "reverse-fail": w.reverse_fail(7, w.ERR_REFUSED, "connection refused"),
        "ping": w.ping(0x0123456789ABCDEF),
        "pong": w.ping(1, w.PONG),
        "open": w.open_(b"", 4, 8000),
        "open-token-v6": w.open_(b"tok", 6, 3000),
        "open-result-ok": w.open_result(0, ""),
        "open-result-refused": w.open_result(w.ERR_REFUSED, "connection refused"),
        "attach": w.attach(b"", 42),
        "attach-token": w.attach(b"tok", 43),
        # near misses and edges
        "unknown-type": w.frame(999, b"future"),
        "flags-set": w.frame(w.PING, struct.pack(">Q", 5), flags=0x8000),
        "longer-payload": w.frame(w.REVERSE_OPEN, struct.pack(">IBH", 1, 4, 80) + b"newer"),
        "short-listener": w.frame(w.LISTENER_ADD, w.listener_payload(4, 80)[:19]),
        "v4-nonzero-tail": w.frame(w.LISTENER_ADD, w.listener_payload(4, 80, bytes(15) + b"\1")),
        "string-with-nul": w.frame(w.ERROR, struct.pack(">IH", 6, 3) + b"a\0b"),
        "max-payload": w.frame(w.ERROR, struct.pack(">IH", 6, 511) + b"x" * 511 +
                               b"\0" * (w.MAX_PAYLOAD - 517)),
        "too-big": struct.pack(">HHI", w.PING, 0, w.MAX_PAYLOAD + 1),
        "reverse-set-max": w.reverse_set(list(range(1, w.REVERSE_MAX_PORTS + 1))),
        "reverse-set-too-many": w.frame(w.REVERSE_SET, struct.pack(">BH", 1, 1025)),
    }
    s["control-session"] = (w.welcome("g", "1") + w.listener(w.LISTENER_ADD, 4, 8000) +
                            w.listener(w.LISTENER_ADD, 6, 8000) + w.empty(w.SYNC_DONE) +
                            w.ping(9) + w.reverse_open(1, 4, 5432))
    return s


def rxbuf_seeds():
    """Byte 0 bit 0: starts with a preamble; bytes 1-2: chunking seed."""
    def seed(chunking, stream, preamble=True):
        return bytes([1 if preamble else 0]) + struct.pack(">H", chunking) + stream

    ctl = (w.welcome("guest", "0.1.0") + w.listener(w.LISTENER_ADD, 4, 8000) +
           w.listener(w.LISTENER_ADD, 6, 3000, None, w.V6ONLY) + w.empty(w.SYNC_DONE) +
           w.ping(1) + w.frame(777, b"skip me"))
    return {
        "control": seed(1, w.preamble(w.KIND_CONTROL) + ctl),
        "control-bytewise": seed(0, w.preamble(w.KIND_CONTROL) + ctl),
        "data-with-rest": seed(7, w.preamble(w.KIND_DATA) + w.open_result(0) +
                               b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "reverse-attach": seed(3, w.preamble(w.KIND_REVERSE) + w.attach(b"", 5)),
        "refused": seed(2, w.preamble(w.KIND_DATA) + w.open_result(w.ERR_REFUSED, "refused")),
        "frames-only": seed(5, ctl, preamble=False),
        "bad-magic-http": seed(1, b"GET / HTTP/1.0\r\n\r\n"),
        "version-2": seed(1, w.preamble(w.KIND_CONTROL, version=2) +
                          w.error(w.ERR_VERSION, "v2")),
        "bad-kind": seed(1, w.preamble(9)),
        "short-preamble": seed(1, w.preamble(w.KIND_CONTROL)[:5]),
        "max-frame": seed(11, w.preamble(w.KIND_DATA) +
                          w.frame(w.OPEN_RESULT, bytes(w.MAX_PAYLOAD)) + b"tail"),
        "too-big": seed(4, w.preamble(w.KIND_CONTROL) + w.ping(3) +
                        struct.pack(">HHI", w.PING, 0, 0xFFFFFFFF)),
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


TARGETS = {
    "frames": frames_seeds, "rxbuf": rxbuf_seeds, "addr": addr_seeds, "fc": fc_seeds,
    "config": config_seeds, "status": status_seeds, "hcs": hcs_seeds,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if a generated seed is missing or differs")
    args = ap.parse_args()
    bad = 0
    for target, fn in TARGETS.items():
        d = os.path.join(CORPUS, target)
        os.makedirs(d, exist_ok=True)
        for name, data in sorted(fn().items()):
            path = os.path.join(d, name)
            old = None
            if os.path.exists(path):
                with open(path, "rb") as f:
                    old = f.read()
            if old == data:
                continue
            if args.check:
                print("differs: %s" % os.path.relpath(path, HERE))
                bad += 1
                continue
            with open(path, "wb") as f:
                f.write(data)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
