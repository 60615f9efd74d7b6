#!/bin/sh
# usage: reproducible.sh BUILD_DIR BUILT_OBJECT BPFTOOL CLANG ARGS... (the
# build's own compile command, without -o; tests/bpf/CMakeLists.txt)
# Compiles the eBPF object again in a private mount namespace where
# /sys/kernel/btf is an empty directory, links it with bpftool as the build
# does, and compares the result with the build's object byte for byte. The
# command may read no header from the build directory: one generated there
# (a vmlinux.h from the build machine's BTF) would make the comparison
# prove nothing.
set -eu
. "$(dirname "$0")/../lrci.sh"
builddir=$1 built=$2 bpftool=$3
shift 3
for a in "$@"; do
  case "$a" in
    -I"$builddir"*)
      echo "bpf_object_reproducible: FAIL: the object is compiled with headers from the build" \
           "directory ($a): generated, not committed" >&2
      exit 1 ;;
  esac
done
[ -r "$built" ] || { echo "no built object $built" >&2; exit 1; }
[ "$(id -u)" = 0 ] || lr_skip_or_fail "bpf_object_reproducible: needs root (unshare -m)"
command -v unshare >/dev/null || lr_skip_or_fail "bpf_object_reproducible: no unshare (util-linux)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The compile command is passed on as arguments, so the inner shell runs
# it as given, without re-splitting.
unshare -m sh -c '
  set -e
  tmp=$1 bpftool=$2
  shift 2
  if [ -d /sys/kernel/btf ]; then mount -t tmpfs none /sys/kernel/btf; fi
  if [ -e /sys/kernel/btf/vmlinux ]; then echo "kernel BTF still visible" >&2; exit 1; fi
  "$@" -o "$tmp/clang.o"
  "$bpftool" gen object "$tmp/listen_trace.bpf.o" "$tmp/clang.o"
' sh "$tmp" "$bpftool" "$@"
if cmp "$built" "$tmp/listen_trace.bpf.o"; then
  echo "bpf_object_reproducible: OK: the object built without kernel BTF equals $built" \
       "($(wc -c <"$built") bytes)"
else
  echo "bpf_object_reproducible: FAIL: the object differs when no kernel BTF is visible" >&2
  exit 1
fi
