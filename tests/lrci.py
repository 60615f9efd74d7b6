"""Is this a CI run, and what a test that cannot run its scenario does.

The product's test rule: outside CI a test whose scenario cannot run on this
machine (no root, no network namespaces, no Wine, a resource limit too low)
is reported as skipped (ctest's SKIP_RETURN_CODE 77); in CI it fails, so a
broken CI image cannot turn the suite into silent skips.

CI means: the environment variable CI is "true", "1" or "yes", in any case.
scripts/test.sh (the README's test command) sets CI=1 on every machine
unless LORELAY_ALLOW_SKIP=1, so there too a skip is a failure.
The same rule is written once per language: in_ci() here,
lr_test_in_ci() in tests/unit/lr_testutil.h, lr_in_ci in tests/lrci.sh and
LORELAY_IN_CI in cmake/LorelayTesting.cmake.

Stdlib only; importable from tests/e2e, tests/win32 and scripts/.
"""

import os
import sys

SKIP = 77  # ctest SKIP_RETURN_CODE


def in_ci(environ=None):
    """True when CI is set to "true", "1" or "yes" (case-insensitive)."""
    env = os.environ if environ is None else environ
    return env.get("CI", "").lower() in ("true", "1", "yes")


def skip_or_fail(testcase, reason):
    """In a unittest.TestCase: fail in CI, skip outside. Does not return."""
    if in_ci():
        testcase.fail("CI is set, so a scenario that cannot run is a failure: " + reason)
    testcase.skipTest(reason)


def exit_skip_or_fail(reason, name=None, stream=None):
    """For a script that is one ctest test: prints one line naming what is
    missing and exits 1 in CI, 77 (skip) outside. Does not return."""
    stream = stream or sys.stderr
    who = (name + ": ") if name else ""
    if in_ci():
        print("%sFAIL (CI is set, a missing prerequisite is a failure): %s" % (who, reason),
              file=stream, flush=True)
        sys.exit(1)
    print("%sSKIP: %s" % (who, reason), file=stream, flush=True)
    sys.exit(SKIP)
