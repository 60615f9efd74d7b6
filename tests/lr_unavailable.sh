#!/bin/sh
# Stands in for a test whose prerequisite was missing when the build was
# configured (see lorelay_add_unavailable_test in cmake/LorelayTesting.cmake):
# the test keeps its name, and fails in CI or is skipped (77) outside.
# usage: lr_unavailable.sh "TEST: WHAT IS MISSING"
. "$(dirname "$0")/lrci.sh"
lr_skip_or_fail "$1"
