# shellcheck shell=sh
# Sourced by the shell tests: is this a CI run, and what a test that cannot
# run its scenario does. Outside CI it exits 77 (ctest SKIP_RETURN_CODE); in
# CI it fails, so a broken CI image cannot turn the suite into silent skips.
#
# CI means: the environment variable CI is "true", "1" or "yes", in any case
# (the same rule as tests/lrci.py, tests/unit/lr_testutil.h and
# LORELAY_IN_CI in cmake/LorelayTesting.cmake).

lr_in_ci() {
  case $(printf '%s' "${CI:-}" | tr '[:upper:]' '[:lower:]') in
    true | 1 | yes) return 0 ;;
    *) return 1 ;;
  esac
}

# lr_skip_or_fail REASON: one line naming what is missing, then exit 1 in
# CI, 77 outside.
lr_skip_or_fail() {
  if lr_in_ci; then
    echo "FAIL (CI is set, a missing prerequisite is a failure): $1" >&2
    exit 1
  fi
  echo "SKIP: $1" >&2
  exit 77
}
