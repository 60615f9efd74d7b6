#!/usr/bin/env bash
# Installs the Debian packages lorelay needs, and only those missing.
#   scripts/deps.sh run    build and run on Linux
#   scripts/deps.sh win64  cross-build for Windows: mingw-w64, plus the pinned
#                          Debian sources of cmake/win32-deps.lock, fetched and
#                          verified into build/_debsrc (LORELAY_DEBSRC_DIR)
#   scripts/deps.sh test   everything the whole test suite needs (both
#                          targets, Wine, lintian, the bench tools for
#                          bench_smoke, QEMU and the guest kernel for the
#                          VM tier), sources included, and the pinned
#                          vhost-device-vsock of cmake/vm-deps.lock
#   scripts/deps.sh bench  build, plus the peers and loads bench/run.sh
#                          measures with
# Debian's packages only; nothing is downloaded elsewhere.
set -euo pipefail

mode=${1:-test}
root=$(cd "$(dirname "$0")/.." && pwd)
# clang, bpftool, libbpf-dev: the agent's eBPF listener trigger (cmake/LorelayBpf.cmake);
# the configure fails without them (-DLORELAY_EBPF=OFF: an agent that polls only).
# libssl-dev: HMAC-SHA256. libcjson-dev: the status and watch documents.
# libsystemd-dev: lorelayd's sd_notify (Type=notify). The README's tour runs
# ip (iproute2), python3, curl, jq, dnsmasq (dnsmasq-base: the binary, no
# system service) and dig (bind9-dnsutils); e2e_run_script checks that list
# against the tour.
run_pkgs=(build-essential cmake pkg-config libuv1-dev libinih-dev libssl-dev libcjson-dev
          libsystemd-dev iproute2 python3 curl jq dnsmasq-base bind9-dnsutils
          clang bpftool libbpf-dev)
# dpkg-dev: dpkg-source unpacks and checks the Debian sources.
win64_pkgs=(cmake make mingw-w64 dpkg-dev)
# systemd: systemd-analyze checks
# the shipped units (pkg_deb), it does not become the init system.
# dnsmasq-base (the binary, no system service), bind9-dnsutils (dig),
# iperf3: the UDP e2e tests' real server and clients.
# qemu-system-x86, linux-image-amd64, busybox-static, xz-utils, cpio: the VM tier
# (tests/vm): QEMU runs Debian's kernel with an initramfs of busybox and
# lorelay's binaries (scripts/vm-image.sh: cpio packs it, xz decompresses modules).
test_pkgs=(libcmocka-dev valgrind clang
           mingw-w64 wine wine64 dpkg-dev file groff-base lintian unzip
           systemd dnsmasq-base bind9-dnsutils iperf3
           qemu-system-x86 linux-image-amd64 busybox-static xz-utils cpio)
# The benchmark's tools: the peers it measures against (socat; pasta from
# passt; RootlessKit with slirp4netns) and the loads (iperf3, redis, wrk +
# nginx, dnsperf against dnsmasq for UDP), gnuplot for its chart. In `test`
# too, for the ctest bench_smoke.
bench_pkgs=(iperf3 redis-server redis-tools socat wrk nginx gnuplot-nox dnsperf dnsmasq-base
            passt rootlesskit slirp4netns)
# perf, for `bench/run.sh --profile` (where the relays' CPU goes; bench_smoke
# runs it too).
profile_pkgs=(linux-perf)

sources=no
vmdeps=no
case "$mode" in
  run) want=("${run_pkgs[@]}") ;;
  win64) want=("${win64_pkgs[@]}"); sources=yes ;;
  test) want=("${run_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}" "${profile_pkgs[@]}"); sources=yes; vmdeps=yes ;;
  bench) want=("${run_pkgs[@]}" "${bench_pkgs[@]}" "${profile_pkgs[@]}") ;;
  *) echo "usage: $0 run|win64|test|bench" >&2; exit 2 ;;
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
else
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The win64 build's third-party sources, exactly as the lock file pins them.
# Fetched here, before CMake runs, so a configure never touches the network
# and a missing or different version stops this script with the package
# named, instead of a build quietly using something else.
if [ "$sources" = yes ]; then
  lock="$root/cmake/win32-deps.lock"
  debsrc=${LORELAY_DEBSRC_DIR:-$root/build/_debsrc}
  n=0
  while read -r pkg version release sha rest; do
    case $pkg in ''|'#'*) continue ;; esac
    if [ -z "$sha" ] || [ -n "$rest" ]; then
      echo "deps: $lock: bad line for $pkg (want: SOURCE VERSION RELEASE SHA256)" >&2
      exit 1
    fi
    sh "$root/scripts/fetch-debian-source.sh" "$pkg" "$version" "$release" "$sha" "$debsrc"
    n=$((n + 1))
  done <"$lock"
  echo "deps: $n pinned Debian source packages verified in $debsrc"
fi

# The VM tier's packages from another Debian release (cmake/vm-deps.lock),
# pinned by version and the .deb's sha256, installed with dpkg.
if [ "$vmdeps" = yes ]; then
  lock="$root/cmake/vm-deps.lock"
  n=0
  while read -r pkg version release sha rest; do
    case $pkg in ''|'#'*) continue ;; esac
    if [ -z "$sha" ] || [ -n "$rest" ]; then
      echo "deps: $lock: bad line for $pkg (want: PACKAGE VERSION RELEASE SHA256)" >&2
      exit 1
    fi
    sh "$root/scripts/fetch-debian-binary.sh" "$pkg" "$version" "$release" "$sha" \
      "${LORELAY_VMDEPS_DIR:-$root/build/_vmdeps}"
    n=$((n + 1))
  done <"$lock"
  echo "deps: $n pinned Debian binary packages installed (cmake/vm-deps.lock)"
fi
