"""A hostile stand-in for lorelay-init + lorelay-agent inside a namespace,
started by a real `lorelayd --netns NAME` through LORELAY_INIT (argv:
`-- --listen unix:PATH --name NAME ...`). It speaks the protocol, reports
the listeners given in HOSTILE_PORTS, and tries every way the audit found
to hand lorelayd a descriptor:

  * with OPEN_RESULT, when lorelayd asks for the server socket (PASS_FD,
    the one-hop path before lorelayd connected inside the namespace
    itself), per port: HOSTILE_RAW gets a SOCK_RAW/IPPROTO_TCP socket,
    HOSTILE_WRONG a TCP socket connected to HOSTILE_WRONG_TO (another
    guest port), HOSTILE_HOSTONLY a socket made in the host's namespace
    connected to the host-only service on HOSTILE_HOSTONLY_TO, and
    HOSTILE_FLOOD an OPEN_RESULT sent one byte per sendmsg with 64
    descriptors each, and a UDP flow to HOSTILE_UDP (reported as a UDP
    listener) a UDP socket connected to the agent's own UDP server on
    HOSTILE_UDP_WRONG_TO, which answers b"wrong-udp";
  * on the first control stream, after the listing: a PING sent one byte
    per sendmsg with 64 descriptors each.

Every control stream after that behaves (listing, PONGs), so lorelayd can
go on serving. What it did is appended to HOSTILE_LOG, one line each."""

import ctypes
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lrpeer  # noqa: E402
from lrpeer import (ERR_OK, LISTENER_ADD, OPEN_RESULT, OPEN_UDP, PING, PONG,  # noqa: E402
                    FakeAgent, enc_listener, enc_open_result, frame)

LOG = os.environ.get("HOSTILE_LOG", "/dev/null")
PORTS = [int(p) for p in os.environ.get("HOSTILE_PORTS", "").split(",") if p]
RAW = int(os.environ.get("HOSTILE_RAW", "0"))
WRONG = int(os.environ.get("HOSTILE_WRONG", "0"))
WRONG_TO = int(os.environ.get("HOSTILE_WRONG_TO", "0"))
HOSTONLY = int(os.environ.get("HOSTILE_HOSTONLY", "0"))
HOSTONLY_TO = int(os.environ.get("HOSTILE_HOSTONLY_TO", "0"))
FLOOD = int(os.environ.get("HOSTILE_FLOOD", "0"))
UDP = int(os.environ.get("HOSTILE_UDP", "0"))
UDP_WRONG_TO = int(os.environ.get("HOSTILE_UDP_WRONG_TO", "0"))
HOST_NS = "/proc/%d/ns/net" % os.getppid()  # lorelayd's: the host's namespace
CLONE_NEWNET = 0x40000000


def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


def send_with_fds(sock, data, fds, per_byte=False):
    """data with fds attached (SCM_RIGHTS), once or one byte per sendmsg."""
    if not per_byte:
        socket.send_fds(sock, [data], fds)
        return
    for i in range(len(data)):
        socket.send_fds(sock, [data[i:i + 1]], fds)


def flood(sock, data):
    null = os.open("/dev/null", os.O_RDONLY)
    try:
        send_with_fds(sock, data, [null] * 64, per_byte=True)
    finally:
        os.close(null)
    log("flooded %d descriptors" % (64 * len(data)))


def host_socket(port):
    """A TCP socket made in the host's namespace, connected to 127.0.0.1:port
    (a thread of its own enters the host's namespace: setns moves one thread)."""
    out = {}

    def run():
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(HOST_NS, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            out["err"] = os.strerror(ctypes.get_errno())
            return
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        out["sock"] = s

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "sock" not in out:
        raise OSError(out.get("err", "no host socket"))
    return out["sock"]


def hostile_data(st, m):
    port = m.get("port")
    flags = m.get("flags", 0)
    result = frame(OPEN_RESULT, enc_open_result(ERR_OK, ""))
    try:
        if not flags & lrpeer.OPEN_PASS_FD:
            log("OPEN %s without PASS_FD: refused" % port)
            st.close()
            return
        if flags & OPEN_UDP:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect(("127.0.0.1", UDP_WRONG_TO))
            send_with_fds(st.sock, result, [s.fileno()])
            log("passed a UDP socket for port %s" % port)
            s.close()
            time.sleep(5)
            st.close()
            return
        if port == FLOOD:
            flood(st.sock, result)
            time.sleep(5)
            st.close()
            return
        if port == RAW:
            s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
            s.connect(("127.0.0.1", 0))
        elif port == WRONG:
            s = socket.create_connection(("127.0.0.1", WRONG_TO), timeout=3)
        elif port == HOSTONLY:
            s = host_socket(HOSTONLY_TO)
        else:
            s = socket.create_connection(("127.0.0.1", port), timeout=3)
        send_with_fds(st.sock, result, [s.fileno()])
        log("passed a socket for port %s" % port)
        s.close()
        time.sleep(5)
    except OSError as e:
        log("port %s: %r" % (port, e))
    st.close()


def serve_control(agent, st, first):
    listeners = [("0.0.0.0", p) for p in PORTS]
    agent.send_listing(st, listeners)
    if UDP:
        st.send(frame(LISTENER_ADD, enc_listener("0.0.0.0", UDP, flags=2)))
    log("control stream %s" % ("1 (hostile)" if first else "again"))
    if first:
        try:
            flood(st.sock, frame(PING, lrpeer.enc_ping(7)))
        except OSError as e:
            log("control flood: %r" % e)
    while True:
        try:
            f = st.recv_frame(timeout=3600)
        except Exception:
            return
        if f.type == PING:
            try:
                st.send(frame(PONG, f.payload))
            except Exception:
                return


def wrong_udp_server():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", UDP_WRONG_TO))
    while True:
        _, peer = s.recvfrom(65536)
        s.sendto(b"wrong-udp", peer)


def main():
    args = sys.argv[1:]
    if UDP_WRONG_TO:
        threading.Thread(target=wrong_udp_server, daemon=True).start()
    path = args[args.index("--listen") + 1][len("unix:"):]
    agent = FakeAgent(path, data=hostile_data).start()
    first = True
    while True:
        try:
            st = agent.accept_control(timeout=3600, listeners=(), sync=False)
        except Exception:
            continue
        threading.Thread(target=serve_control, args=(agent, st, first), daemon=True).start()
        first = False


if __name__ == "__main__":
    main()
