#!/bin/sh
# One bounded libFuzzer run as a ctest test (fuzz_<target>_smoke).
#
# usage: run_fuzz_smoke.sh NAME FUZZER CORPUS_DIR SECONDS MAX_LEN ARTIFACT_DIR
#
# The run starts from a temporary copy of the seed corpus, because libFuzzer
# writes every new interesting input into its first corpus directory and
# the repository's corpus must stay the reviewed one. Every seed is run
# first (so the regression inputs kept there are replayed on every run),
# then the fuzzer mutates for SECONDS. A crash, leak, UBSan report,
# timeout or broken invariant fails the test; the input that caused it is
# kept under ARTIFACT_DIR and its path printed. On success one line says
# how much work was done: "NAME: N executions ...".
set -u

if [ $# -ne 6 ]; then
  echo "usage: $0 NAME FUZZER CORPUS_DIR SECONDS MAX_LEN ARTIFACT_DIR" >&2
  exit 2
fi
name=$1 fuzzer=$2 corpus=$3 seconds=$4 max_len=$5 artifacts=$6

if [ ! -x "$fuzzer" ]; then
  echo "$name: FAIL: fuzzer $fuzzer is not built" >&2
  exit 1
fi
# A missing or empty corpus would quietly turn the run into a blind one.
if [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
  echo "$name: FAIL: seed corpus $corpus is missing or empty" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/lorelay-$name.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT INT TERM
cp -R "$corpus" "$work/corpus" || exit 1
mkdir -p "$artifacts" || exit 1
seeds=$(ls -A "$work/corpus" | wc -l)

"$fuzzer" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len="$max_len" -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
  "$work/corpus" >"$work/log" 2>&1
rc=$?

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
cov=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\).*/\1/p' "$work/log" | tail -n 1)
found=$(( $(ls -A "$work/corpus" | wc -l) - seeds ))

if [ "$rc" -ne 0 ]; then
  tail -n 80 "$work/log"
  echo "$name: FAIL (exit $rc) after ${execs:-?} executions; the input is saved as" \
       "$artifacts/$name-*"
  exit 1
fi
if [ -z "$execs" ] || [ "$execs" -eq 0 ]; then
  tail -n 40 "$work/log"
  echo "$name: FAIL: libFuzzer reported no executions"
  exit 1
fi
echo "$name: $execs executions in ${seconds} s ($seeds seeds, $found new inputs, coverage ${cov:-?} edges)"
