"""Runs a packaged unit's ExecStart line from an unpacked .deb, as systemd
would with Type=notify, and checks that lorelayd reaches READY=1.

The line is taken from the unit file itself: /usr/bin/ becomes the
unpacked tree's, the /etc/lorelay config file a copy of the unpacked one
(with --append TEXT added to it), and $LORELAY_ARGS (what lorelayd.env
would set) points the status socket into the scratch directory, so no
real /run/lorelay is touched. The test listens on NOTIFY_SOCKET as systemd
does: READY=1 must arrive while the status socket answers, then SIGTERM
must bring STOPPING=1 and exit status 0.

usage: notify_ready.py UNIT ROOT SCRATCH [--append TEXT]
exit: 0 ready, 1 failure, 3 lorelayd refused the config for having no
guest ("no guest given": a tree without the zero-guest start).
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time


def notifications(s, deadline, proc):
    while time.time() < deadline:
        s.settimeout(0.2)
        try:
            data = s.recv(4096).decode()
        except socket.timeout:
            if proc.poll() is not None:
                return
            continue
        yield dict(l.split("=", 1) for l in data.split("\n") if "=" in l)


def status_answers(path):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(2)
    try:
        c.connect(path)
        c.sendall(b"status json\n")
        buf = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            buf += b
        return json.loads(buf.decode())
    except (OSError, ValueError):
        return None
    finally:
        c.close()


def main():
    args = sys.argv[1:]
    append = ""
    if "--append" in args:
        i = args.index("--append")
        append = args[i + 1].replace("\\n", "\n")
        del args[i:i + 2]
    unit, root, scratch = args
    os.makedirs(scratch, exist_ok=True)
    text = open(unit).read()
    m = re.search(r"^ExecStart=[-@:+!]*(.*)$", text, re.M)
    if not m:
        print("FAIL: %s has no ExecStart line" % unit)
        return 1
    line = m.group(1)
    if not re.search(r"^Type=notify$", text, re.M):
        print("FAIL: %s is not Type=notify" % unit)
        return 1

    def config(mo):
        src = root + mo.group(0)
        dst = os.path.join(scratch, os.path.basename(mo.group(0)))
        with open(src) as f, open(dst, "w") as g:
            g.write(f.read() + "\n" + append)
        return dst

    line = re.sub(r"/etc/lorelay/\S+\.ini", config, line)
    line = line.replace("/usr/bin/", root + "/usr/bin/")
    sock = os.path.join(scratch, "status.sock")
    largs = "--socket " + sock
    line = line.replace("${LORELAY_ARGS}", largs).replace("$LORELAY_ARGS", largs)
    argv = shlex.split(line)
    print("running: " + " ".join(argv))

    npath = os.path.join(scratch, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(npath)
    env = dict(os.environ, NOTIFY_SOCKET=npath)
    env.pop("JOURNAL_STREAM", None)
    log = os.path.join(scratch, "lorelayd.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL)

    def output():
        with open(log, errors="replace") as f:
            return f.read()

    try:
        ready = None
        for msg in notifications(s, time.time() + 15, proc):
            if msg.get("READY") == "1":
                ready = msg
                break
        if ready is None:
            proc.poll()
            out = output()
            if proc.returncode == 2 and "no guest given" in out:
                print("lorelayd does not start without a guest:\n" + out)
                return 3
            print("FAIL: no READY=1 within 15 s (exit status %s); output:\n%s"
                  % (proc.returncode, out))
            return 1
        st = status_answers(sock)
        if st is None:
            print("FAIL: READY=1 but the status socket %s does not answer" % sock)
            return 1
        print("READY=1, STATUS=%s; status lists %d guest(s)"
              % (ready.get("STATUS"), len(st.get("guests", []))))
        proc.send_signal(signal.SIGTERM)
        stopping = any(m.get("STOPPING") == "1" for m in notifications(s, time.time() + 10, proc))
        rc = proc.wait(10)
        if not stopping or rc != 0:
            print("FAIL: after SIGTERM: STOPPING=1 %s, exit status %d; output:\n%s"
                  % ("seen" if stopping else "missing", rc, output()))
            return 1
        print("STOPPING=1, exit status 0")
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        s.close()


if __name__ == "__main__":
    sys.exit(main())
