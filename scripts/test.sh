#!/usr/bin/env bash
# One command from a fresh clone to the whole test suite: installs what is
# missing, builds the Linux, Linux-ASan and Windows (mingw-w64) targets, and
# runs every test (unit, valgrind, ASan, end-to-end in network namespaces,
# Windows under Wine) in one ctest run that ends with ctest's summary.
# The release files land in dist/: the pkg_dist test collects the win64 zip
# (made by the win64 build), the .deb and .tar.gz, writes SHA256SUMS and
# checks each, so they are in that one summary too.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/deps.sh test
cmake --preset linux-asan >/dev/null
cmake --build --preset linux-asan -j"$jobs"
cmake --preset win64 >/dev/null
cmake --build --preset win64 -j"$jobs"
cmake --preset linux >/dev/null
cmake --build --preset linux -j"$jobs"
# The linux build's test list includes the linux-asan and win64 builds.
exec ctest --test-dir build/linux --output-on-failure -j"$jobs" --timeout 600 "$@"
