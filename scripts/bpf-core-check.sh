#!/usr/bin/env bash
# Checks that every CO-RE relocation of the agent's eBPF object resolves
# against a kernel's BTF, without loading anything (no root needed):
#   scripts/bpf-core-check.sh [OBJECT] [BTF]
# OBJECT defaults to build/linux/guest/bpf/listen_trace.bpf.o, BTF to this
# machine's /sys/kernel/btf/vmlinux; give another kernel's BTF file (for
# example one extracted from a distribution's kernel package) to check the
# object against that kernel.
#
# Why: the object is built from the committed guest/bpf/vmlinux_min.h, so
# nothing at build time says whether a field it names exists in a given
# kernel. libbpf's relocation logic, run by `bpftool gen min_core_btf`,
# says it: a relocation that matches no kernel type is logged as "no
# matching targets found" (the load would then fail on that instruction).
# Only field-existence probes (bpf_core_field_exists) may legitimately
# match nothing; every other unmatched relocation fails this check.
set -euo pipefail
cd "$(dirname "$0")/.."
obj=${1:-build/linux/guest/bpf/listen_trace.bpf.o}
btf=${2:-/sys/kernel/btf/vmlinux}
bpftool=$(command -v bpftool || echo /usr/sbin/bpftool)

[ -r "$obj" ] || { echo "bpf-core-check: no object $obj (build first)" >&2; exit 2; }
[ -r "$btf" ] || { echo "bpf-core-check: no kernel BTF $btf" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! "$bpftool" -d gen min_core_btf "$btf" "$tmp/min.btf" "$obj" >"$tmp/log" 2>&1; then
  cat "$tmp/log" >&2
  echo "bpf-core-check: bpftool gen min_core_btf failed" >&2
  exit 1
fi

# Lines: "libbpf: prog 'P': relo #N: <kind> [id] struct x.field (...)" and,
# for a relocation without a match, "libbpf: prog 'P': relo #N: no matching
# targets found".
awk '
  /relo #[0-9]+: </ && !/candidate/ {
    match($0, /prog .*relo #[0-9]+:/); key = substr($0, RSTART, RLENGTH)
    desc[key] = $0
  }
  /no matching targets found/ {
    match($0, /prog .*relo #[0-9]+:/); key = substr($0, RSTART, RLENGTH)
    if (desc[key] ~ /<field_exists>|<type_exists>|<type_matches>|<enumval_exists>/) next
    print "unresolved: " desc[key]; bad = 1
  }
  END { exit bad }
' "$tmp/log" >&2 || { echo "bpf-core-check: FAIL: $obj does not relocate against $btf" >&2; exit 1; }
echo "bpf-core-check: OK: every CO-RE relocation of $obj resolves against $btf"
