"""A scripted hybrid-vsock device: the host side of vhost-device-vsock (and
of Firecracker's vsock), played by the test over Unix sockets, with the
close semantics those devices have (read from their sources; see
docs/protocol.md, "Transports that lose a half-close"):

- The host connects to the device's Unix socket and sends
  "CONNECT <port>\\n"; the device reaches the guest's listener (here: the
  agent's Unix socket) and answers "OK <n>\\n". No guest listener: the
  host's stream is closed.
- Bytes pass both ways.
- The guest's half-close (shutdown(SHUT_WR), a virtio-vsock SHUTDOWN with
  the SEND flag only) is dropped: the host's stream never sees it.
- The guest's full close or reset (SHUTDOWN with both flags, RST) drops the
  connection: the host's stream is closed. Here: the agent's socket shows
  POLLHUP (its peer closed, not merely shut its write side).
- End of file on the host's stream (its shutdown(SHUT_WR) as much as its
  close) becomes SHUTDOWN(RCV|SEND) towards the guest, which the guest
  kernel answers with a reset: a full close of the guest's socket. Here:
  shutdown(SHUT_RDWR) of the agent's socket, which the agent sees as
  POLLHUP.

So a relay that relies on half-closes travelling through the device hangs
(the guest's FIN never arrives) or loses the guest's answer (the host's
FIN closes the guest's socket).

deaf=True is a harsher device that passes on no close at all, either way:
each side's socket is closed only once both ends have closed theirs, so
the relays must end every connection by themselves. Stdlib only, one thread per direction;
bounded by the test's own connections."""

import os
import select
import socket
import threading

OK_PORT = 1073741824  # what vhost-device-vsock's first local port looks like


class HybridVsockMux:
    def __init__(self, path, agent_path, deaf=False):
        self.deaf = deaf
        self.path = path
        self.agent_path = agent_path
        self.stopping = False
        self.conns = 0
        self.lock = threading.Lock()
        self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ls.bind(path)
        self.ls.listen(64)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        try:
            self.ls.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.ls.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _accept(self):
        while not self.stopping:
            try:
                h, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(h,), daemon=True).start()

    def _wait_hup(self, sock):
        """Until the peer of sock has closed (not merely shut its write side)."""
        p = select.poll()
        p.register(sock, 0)
        while not self.stopping:
            ev = p.poll(100)
            if ev and ev[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return

    def _serve(self, h):
        h.settimeout(5.0)
        line = b""
        try:
            while not line.endswith(b"\n") and len(line) < 32:
                b = h.recv(1)
                if not b:
                    break
                line += b
        except OSError:
            pass
        words = line.split()
        if len(words) != 2 or words[0].lower() != b"connect" or not words[1].isdigit():
            h.close()
            return
        g = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            g.connect(self.agent_path)
            h.sendall(b"OK %d\n" % OK_PORT)
        except OSError:
            g.close()
            h.close()
            return
        h.settimeout(None)
        with self.lock:
            self.conns += 1
        done = []

        def finished():
            with self.lock:
                done.append(1)
                if len(done) == 2:
                    h.close()
                    g.close()

        def host_to_guest():
            while True:
                try:
                    b = h.recv(65536)
                except OSError:
                    b = b""
                if not b:
                    break
                try:
                    g.sendall(b)
                except OSError:
                    break
            if self.deaf:
                self._wait_hup(h)
            else:
                # SHUTDOWN(RCV|SEND) to the guest, answered by its reset.
                try:
                    g.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            finished()

        def guest_to_host():
            while True:
                try:
                    b = g.recv(65536)
                except OSError:
                    b = b""
                if not b:
                    break
                try:
                    h.sendall(b)
                except OSError:
                    break
            # End of file from the guest: a half-close is dropped; only a full
            # close (POLLHUP) drops the connection and closes the host's stream.
            self._wait_hup(g)
            if not self.deaf:
                try:
                    h.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            finished()

        threading.Thread(target=host_to_guest, daemon=True).start()
        threading.Thread(target=guest_to_host, daemon=True).start()
