#!/usr/bin/env bash
# Runs lorelay's benchmark (bench/lorelay_bench.py) against the peers a
# user would otherwise pick: direct loopback in a namespace, lorelay, socat chains.
# As root, after `scripts/deps.sh bench` and a build. Not part of ctest: it
# takes minutes and wants an otherwise idle machine.
#   bench/run.sh [--rounds N] [--only cpu,throughput,redis,connrate,idle,udp] [--json FILE]
# Binaries: $LORELAY_BIN_DIR, else build/linux/bin (--bin-dir overrides).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/run.sh: must run as root (it creates a network namespace)" >&2
  exit 1
fi
export LORELAY_BIN_DIR=${LORELAY_BIN_DIR:-$here/../build/linux/bin}
exec python3 "$here/lorelay_bench.py" "$@"
