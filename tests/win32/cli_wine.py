#!/usr/bin/env python3
"""What a Windows user meets before any guest connects, under Wine.

- lorelayd.exe refuses what Windows cannot reach at start, with exit
  status 2 and one line: --guest unix:/vsock:/fc: and --netns; a [guest]
  section naming vsock: stops the start instead of being retried forever.
- lorelayd.exe --help lists hvsock: and tcp: only, says TCP and UDP and how
  to apply an edited config (paramchange).
- One text for applying changes: the zip's README.txt and lorelay.ini and
  docs/windows.md say "sc.exe control lorelayd paramchange", never a
  restart.
- install.cmd and uninstall.cmd stop at once without an elevated prompt.
  Wine's `net session` always succeeds (everyone is an administrator
  there), so "not elevated" is made by disabling net.exe
  (WINEDLLOVERRIDES=net.exe=n): the probe then fails as it does for a
  user without an administrator's token on Windows.
- install.cmd, elevated: lorelayctl is on PATH in the prompt that ran it
  (`call install.cmd ... & lorelayctl.exe --version` in one cmd) and it
  prints the line for another prompt.
- uninstall.cmd reports each thing it removed, says "not installed" when
  there is no service, and when something cannot be removed (here a
  directory where lorelayd.exe was) says FAILED and exits 1.

Not testable under Wine: a real non-administrator token, UAC, and
sc.exe delete failing (Wine's never does for an existing service).

Needs Wine and the win64 build's zip; no root, no network namespace.
"""
import argparse
import base64
import os
import shutil
import socket
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_wine import Wine, log, run, skip, winpath  # noqa: E402


def check(cond, what, detail=""):
    if not cond:
        raise AssertionError(f"{what}\n{detail}")
    log(f"OK {what}")


def one_line(r):
    lines = [l for l in r.stderr.replace("\r", "").splitlines() if l.strip()]
    return lines[0] if len(lines) == 1 else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_lorelayd(wine, exe, work):
    pipe = f"\\\\.\\pipe\\lorelay-cli-{os.getpid()}"
    for addr, kind in (("unix:/x", "unix:"), ("vsock:3:50505", "vsock:"),
                       ("fc:/srv/v.sock:5", "fc:")):
        r = wine.cmd([exe, "--guest", addr, "--socket", pipe], check=False, timeout=60)
        line = one_line(r)
        check(r.returncode == 2 and line is not None and
              f"--guest {addr}: {kind} guests need lorelayd on Linux" in line,
              f"--guest {addr}: exit 2 and one line", f"rc={r.returncode} {r.stdout}{r.stderr}")
    r = wine.cmd([exe, "--netns", "web", "--socket", pipe], check=False, timeout=60)
    line = one_line(r)
    check(r.returncode == 2 and line is not None and
          "network namespace guests need lorelayd on Linux" in line,
          "--netns: exit 2 and one line", f"rc={r.returncode} {r.stdout}{r.stderr}")
    ini = os.path.join(work, "vsock.ini")
    with open(ini, "w") as f:
        f.write("[guest vm]\r\ntransport = vsock:3:50505\r\n")
    r = wine.cmd([exe, "-c", winpath(ini), "--socket", pipe], check=False, timeout=60)
    check(r.returncode != 0 and "vsock: guests need lorelayd on Linux" in r.stderr,
          "a [guest] section with vsock: stops the start",
          f"rc={r.returncode} {r.stdout}{r.stderr}")
    r = wine.cmd([exe, "--help"], check=False, timeout=60)
    h = r.stdout
    check(r.returncode == 0 and "hvsock:VMID:PORT" in h and "tcp:HOST:PORT" in h
          and "TCP and UDP" in h and "sc.exe control lorelayd paramchange" in h,
          "--help lists hvsock: and tcp:, says TCP and UDP and paramchange", h)
    for absent in ("unix:", "vsock:CID", "fc:", "--netns", "netns"):
        check(absent not in h, f"--help does not offer {absent}", h)


def check_texts(top, source_dir):
    texts = {"README.txt": os.path.join(top, "README.txt"),
             "lorelay.ini": os.path.join(top, "lorelay.ini"),
             "docs/windows.md": os.path.join(source_dir, "docs", "windows.md")}
    for name, path in texts.items():
        t = open(path, encoding="utf-8").read()
        check("sc.exe control lorelayd paramchange" in t, f"{name} says paramchange")
        check("sc.exe stop lorelayd & sc.exe start" not in t and "Restart the service" not in t,
              f"{name} does not say to restart the service")


def service_registered(wine):
    return wine.cmd(["sc.exe", "query", "lorelayd"], check=False).returncode == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wine-run", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--zip", required=True)
    ap.add_argument("--source-dir", required=True)
    a = ap.parse_args()
    for tool in ("wine", "wineserver"):
        if shutil.which(tool) is None:
            skip(f"{tool} not found")
    if not os.path.exists(a.zip):
        raise SystemExit(f"zip not found: {a.zip} (run cpack / the win32_package test)")

    work = tempfile.mkdtemp(prefix="lorelay-wine-cli-")
    wine = Wine(a.wine_run, a.prefix)
    ok = False
    try:
        wine.ensure_prefix()
        check_lorelayd(wine, os.path.join(a.bin_dir, "lorelayd.exe"), work)

        unpack = wine.drive_c("lorelay-cli-unpack")
        shutil.rmtree(unpack, ignore_errors=True)
        with zipfile.ZipFile(a.zip) as z:
            z.extractall(unpack)
        top_name = os.listdir(unpack)[0]
        top = os.path.join(unpack, top_name)
        check_texts(top, a.source_dir)
        install = f"C:\\lorelay-cli-unpack\\{top_name}\\install.cmd"
        uninstall = f"C:\\lorelay-cli-unpack\\{top_name}\\uninstall.cmd"

        # A clean slate: no service and no programs from an earlier run.
        wine.cmd(["cmd", "/c", uninstall], check=False, timeout=120)
        dest = wine.drive_c("Program Files", "lorelay")
        shutil.rmtree(dest, ignore_errors=True)

        # Not elevated: both scripts stop at once, nothing installed.
        not_admin = dict(wine.env, WINEDLLOVERRIDES="mscoree,mshtml=;net.exe=n")
        r = run(["wine", "cmd", "/c", install, "--guest", "tcp:127.0.0.1:9"], check=False,
                env=not_admin, timeout=120)
        check(r.returncode == 1 and "install.cmd needs an elevated prompt" in r.stderr
              and not service_registered(wine) and not os.path.exists(dest),
              "install.cmd without an elevated prompt: exit 1, nothing done",
              f"rc={r.returncode} {r.stdout}{r.stderr}")
        r = run(["wine", "cmd", "/c", uninstall], check=False, env=not_admin, timeout=120)
        check(r.returncode == 1 and "uninstall.cmd needs an elevated prompt" in r.stderr,
              "uninstall.cmd without an elevated prompt: exit 1",
              f"rc={r.returncode} {r.stdout}{r.stderr}")

        # Elevated: installed, and lorelayctl on PATH in the same prompt.
        data = wine.drive_c("ProgramData", "lorelay")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(data, "token"), "w") as f:
            # A real key: lorelayd refuses weak ones (a pattern repeated).
            f.write(base64.b64encode(os.urandom(24)).decode() + "\n")
        port = free_port()  # nothing listens: the service keeps retrying, on loopback
        r = wine.cmd(["cmd", "/c", "call", install, "--guest", f"tcp:127.0.0.1:{port}",
                      "--token-file", "C:\\ProgramData\\lorelay\\token", "&",
                      "lorelayctl.exe", "--version"], check=False, timeout=180)
        out = r.stdout.replace("\r", "")
        log(f"install.cmd rc={r.returncode}\n{out}{r.stderr}")
        check("installed and started" in out, "install.cmd installed and started the service",
              r.stderr)
        check("lorelayctl 0." in out, "lorelayctl.exe runs by name in the prompt that ran install.cmd")
        check('set "PATH=C:\\Program Files\\lorelay;%PATH%"' in out,
              "install.cmd prints the PATH line for another prompt")
        check("sc.exe control lorelayd paramchange" in out, "install.cmd says how to apply changes")

        # Uninstall reports what it removed.
        r = wine.cmd(["cmd", "/c", uninstall], check=False, timeout=120)
        out = r.stdout.replace("\r", "")
        log(f"uninstall.cmd rc={r.returncode}\n{out}{r.stderr}")
        for want in ("lorelay: stopped service lorelayd", "lorelay: removed service lorelayd",
                     "lorelay: removed Event Log source lorelayd",
                     "lorelay: removed C:\\Program Files\\lorelay\\lorelayd.exe",
                     "lorelay: removed C:\\Program Files\\lorelay\\lorelayctl.exe",
                     "lorelay: removed C:\\Program Files\\lorelay\n",
                     "lorelay: kept C:\\ProgramData\\lorelay", "lorelay: uninstalled"):
            check(want in out + "\n", f"uninstall.cmd says '{want.strip()}'", out)
        check(r.returncode == 0 and not service_registered(wine), "uninstall.cmd: exit 0, no service")
        r = wine.cmd(["cmd", "/c", uninstall], check=False, timeout=120)
        check(r.returncode == 0 and "service lorelayd: not installed" in r.stdout,
              "uninstall.cmd again: 'not installed', exit 0", r.stdout + r.stderr)

        # Something it cannot remove: said, and exit 1.
        os.makedirs(os.path.join(dest, "lorelayd.exe", "in-the-way"))
        open(os.path.join(dest, "lorelayd.exe", "in-the-way", "f"), "w").close()
        r = wine.cmd(["cmd", "/c", uninstall], check=False, timeout=120)
        check(r.returncode == 1
              and "FAILED to remove C:\\Program Files\\lorelay\\lorelayd.exe" in r.stderr
              and "uninstall incomplete" in r.stderr and "uninstalled" not in r.stdout,
              "uninstall.cmd names what it could not remove and exits 1",
              f"rc={r.returncode} {r.stdout}{r.stderr}")
        ok = True
    finally:
        shutil.rmtree(wine.drive_c("Program Files", "lorelay"), ignore_errors=True)
        shutil.rmtree(wine.drive_c("lorelay-cli-unpack"), ignore_errors=True)
        wine.kill_server()
        shutil.rmtree(work, ignore_errors=True)
    log("PASS (cli)" if ok else "FAIL (cli)")


if __name__ == "__main__":
    main()
