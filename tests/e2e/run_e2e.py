"""ctest entry point for one end-to-end scenario: run_e2e.py test_MODULE.

Separate from `python3 -m unittest` because ctest needs three outcomes, not
two: pass (0), fail (1), and skip (77). A scenario that cannot run here
(no network namespaces, no root, a test that called skipTest) is a skip
outside CI and a failure in CI (tests/lrci.py), so a broken CI image cannot
turn the whole suite into silent skips. unittest counts a skipped test as a
success; this runner does not: any skip makes the whole run exit 77 (or 1
in CI), never 0.
"""

import importlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lrharness  # noqa: E402
import lrci  # noqa: E402  (on the path through lrharness)


def main():
    if len(sys.argv) < 2:
        print("usage: run_e2e.py test_MODULE[.Class[.method]] ...", file=sys.stderr)
        return 2
    lrharness.check_environment_or_exit()
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in sys.argv[1:]:
        importlib.import_module(name.split(".")[0])
        suite.addTests(loader.loadTestsFromName(name))
    if suite.countTestCases() == 0:
        print("no tests found in " + " ".join(sys.argv[1:]), file=sys.stderr)
        return 1
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    if not result.wasSuccessful():
        return 1
    if result.skipped:
        why = "; ".join("%s: %s" % (t.id(), reason) for t, reason in result.skipped)
        if lrci.in_ci():
            print("FAIL (CI is set, a skipped scenario is a failure): %d skipped: %s"
                  % (len(result.skipped), why), file=sys.stderr)
            return 1
        print("SKIP: %d of %d skipped: %s" % (len(result.skipped), result.testsRun, why),
              file=sys.stderr)
        return lrci.SKIP
    return 0


if __name__ == "__main__":
    sys.exit(main())
