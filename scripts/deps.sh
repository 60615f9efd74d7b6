#!/usr/bin/env bash
# Installs the Debian packages lorelay needs, and only those missing.
#   scripts/deps.sh run    build and run on Linux
#   scripts/deps.sh test   everything the whole test suite needs (both targets)
#   scripts/deps.sh bench  build, plus the peers bench/run.sh measures against
# Debian's packages only (BRIEF section 7); nothing is downloaded elsewhere.
set -euo pipefail

mode=${1:-test}
run_pkgs=(build-essential cmake pkg-config libuv1-dev libinih-dev iproute2 python3 curl)
test_pkgs=(libcmocka-dev valgrind clang
           mingw-w64 wine wine64 dpkg-dev file groff-base)
bench_pkgs=(iperf3 redis-server redis-tools socat)

case "$mode" in
  run) want=("${run_pkgs[@]}") ;;
  test) want=("${run_pkgs[@]}" "${test_pkgs[@]}") ;;
  bench) want=("${run_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac

SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#want[@]} packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
