#!/bin/sh
# Builds and runs the sockmap experiment (probe.c, relay.bpf.c) on loopback:
# direct, a user-space copy relay and the sockmap relay, one after the
# other. Root (it loads a BPF program); clang, libbpf-dev (scripts/deps.sh
# run installs both). Bounded: each path stops within about two minutes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
arch_inc=/usr/include/$(gcc -print-multiarch)
clang -target bpf -O2 -g -I"$arch_inc" -c "$here/relay.bpf.c" -o "$out/relay.bpf.o"
gcc -O2 -Wall -Wextra -Werror -o "$out/probe" "$here/probe.c" -lbpf -lpthread
for mode in direct copy sockmap; do
  RELAY_BPF=$out/relay.bpf.o timeout 150 "$out/probe" $mode || echo "$mode: stopped (exit $?)"
done
