#!/bin/sh
# usage: core_check.sh SOURCE_DIR OBJECT
# scripts/bpf-core-check.sh against this machine's kernel BTF.
set -eu
. "$(dirname "$0")/../lrci.sh"
[ -r /sys/kernel/btf/vmlinux ] ||
  lr_skip_or_fail "bpf_core_check: this kernel has no BTF (/sys/kernel/btf/vmlinux)"
exec "$1/scripts/bpf-core-check.sh" "$2" /sys/kernel/btf/vmlinux
