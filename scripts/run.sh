#!/usr/bin/env bash
# One command from a fresh clone to a running lorelay: installs what is
# missing, builds the Linux preset and starts lorelayd with a demo guest
# network namespace (default "lorelay-demo"; pass another name as $1).
#
# Each demo has a status socket of its own (/run/lorelay/demo-NAME.sock),
# so two demos side by side do not collide; the lorelayctl line to reach it
# is printed. At exit (Ctrl-C) it removes what it made: the namespace when
# it created it, the namespace's lock file and the status socket.
#
# With LORELAY_BIN_DIR set, the programs there are used and nothing is
# installed or built (how the e2e_run_script test runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ns=${1:-lorelay-demo}
case $ns in
  *[!A-Za-z0-9._-]*|'') echo "run.sh: demo name '$ns': letters, digits, '.', '_' or '-' only" >&2; exit 2 ;;
esac

if [ -z "${LORELAY_BIN_DIR:-}" ]; then
  scripts/deps.sh run
  # The preset's test-only settings (LORELAY_FUZZ) are unused with the
  # tests off: nothing to warn about.
  cmake --preset linux -DLORELAY_TESTS=OFF --no-warn-unused-cli >/dev/null
  cmake --build --preset linux -j"$(nproc)"
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
S=${SUDO[*]:+${SUDO[*]} }
bin=${LORELAY_BIN_DIR:-$PWD/build/linux/bin}
sock=/run/lorelay/demo-$ns.sock
lock=/run/lorelay/netns-$ns.lock
# A demo of this name running already holds the lock: leave it (and its
# files) alone.
"${SUDO[@]}" mkdir -p /run/lorelay
if ! "${SUDO[@]}" flock -n "$lock" true; then
  echo "run.sh: demo $ns runs already (a lorelayd holds $lock); stop it or give another name" >&2
  exit 1
fi
# lorelayd makes the namespace as `ip netns add` does (/run/netns/NAME);
# one that was there before this demo is the admin's and stays.
made_ns=yes
if [ -e "/run/netns/$ns" ]; then made_ns=no; fi

cleanup() {
  trap - EXIT
  "${SUDO[@]}" rm -f "$sock" "$lock"
  if [ "$made_ns" = yes ] && [ -e "/run/netns/$ns" ]; then
    "${SUDO[@]}" ip netns delete "$ns" || true
    echo "run.sh: removed network namespace $ns"
  fi
  echo "run.sh: removed $sock and $lock"
}
trap cleanup EXIT

cat <<MSG

lorelay is starting: guest network namespace "$ns" -> this host's loopback.
In another terminal, start a server inside the guest:

    ${S}ip netns exec $ns python3 -m http.server 8000

then reach it from the host:

    curl http://127.0.0.1:8000/
    ${S}$bin/lorelayctl --socket $sock status

Stop with Ctrl-C.
MSG
# Not exec: the cleanup above runs once lorelayd has stopped. Ctrl-C
# reaches lorelayd too (same process group), which stops cleanly.
rc=0
"${SUDO[@]}" "$bin/lorelayd" --netns "$ns" --socket "$sock" || rc=$?
exit "$rc"
