#!/usr/bin/env bash
# Runs lorelay's benchmark (bench/lorelay_bench.py) against the peers a
# user would otherwise pick: direct loopback in a namespace, socat chains
# (8 KiB and 256 KiB buffers), pasta (passt), RootlessKit's builtin port
# driver, lorelay one-hop (--netns) and two-hop (the path VM guests use).
# Every row of lorelay's performance goals (GOALS in lorelay_bench.py, the
# "goal" columns of docs/benchmarks.md) in one run, as ratios to direct.
# As root, after `scripts/deps.sh bench` and a build. The full run takes
# about 15 minutes and wants an otherwise idle machine; ctest runs only the
# seconds-long --smoke (bench_smoke).
#   bench/run.sh [--rounds N] [--only cpu,throughput,redis,connrate,wrk,idle,detection,udp]
#                [--json FILE] [--chart FILE.svg|FILE.png] [--smoke]
# Binaries: $LORELAY_BIN_DIR, else build/linux/bin (--bin-dir overrides).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "bench/run.sh: must run as root (it creates a network namespace)" >&2
  exit 1
fi
export LORELAY_BIN_DIR=${LORELAY_BIN_DIR:-$here/../build/linux/bin}
exec python3 "$here/lorelay_bench.py" "$@"
