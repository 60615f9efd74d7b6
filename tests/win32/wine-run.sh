#!/bin/sh
# ctest's CMAKE_CROSSCOMPILING_EMULATOR for the win64 build: runs a Windows
# test binary under Wine in the build tree's own prefix.
#
# Why a wrapper and not plain `wine`: the first use of a prefix takes a long
# time (wineboot) and must not happen in several test processes at once, and
# tests must not depend on (or litter) $HOME/.wine. The prefix is created
# under a lock; Mono/Gecko installs are skipped since nothing here needs them.
#
# Without wine it exits 77 (skip) outside CI and fails in CI (tests/lrci.sh).
#
# Usage: wine-run.sh PREFIX PROGRAM.exe [ARGS...]
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 WINEPREFIX PROGRAM [ARGS...]" >&2
  exit 2
fi
. "$(dirname "$0")/../lrci.sh"
for tool in wine wineserver; do
  command -v "$tool" >/dev/null 2>&1 ||
    lr_skip_or_fail "$(basename "$2"): $tool not found (apt-get install wine)"
done
WINEPREFIX=$1
shift
export WINEPREFIX
export WINEDEBUG=${WINEDEBUG:--all}
export WINEDLLOVERRIDES=${WINEDLLOVERRIDES:-mscoree,mshtml=}

mkdir -p "$WINEPREFIX"
if [ ! -f "$WINEPREFIX/.lorelay-ready" ]; then
  (
    flock 9
    if [ ! -f "$WINEPREFIX/.lorelay-ready" ]; then
      wineboot -i >/dev/null 2>&1 || wine wineboot -i >/dev/null 2>&1
      wineserver -w
      touch "$WINEPREFIX/.lorelay-ready"
    fi
  ) 9>"$WINEPREFIX.lock"
fi
exec wine "$@"
