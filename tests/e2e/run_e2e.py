"""ctest entry point for one end-to-end scenario: run_e2e.py test_MODULE.

Separate from `python3 -m unittest` because ctest needs three outcomes, not
two: pass (0), fail (1), and skip (77) when this machine cannot create
network namespaces. With CI=true a missing prerequisite is a failure, so a
broken CI image cannot turn the whole suite into silent skips.
"""

import importlib
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lrharness  # noqa: E402


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
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
