"""A small unittest runner for the integration tests.

Each test file ends with `harness.main()`. It runs the file's unittest tests in
the order they are defined, prints one line per test (PASS, FAIL with the
failure message, SKIP with the reason), prints the log of every running ckptd
when a test fails, and ends with `N passed, M failed[, K skipped]` (or, under
run.sh, a "-- file: pass N, fail M, skip K" line, run.sh printing the total). Errors count
as failures. When $CKPTD_IT_SUMMARY names a file, "N M K" is written there so
run.sh can add up the files.
"""

import inspect
import os
import signal
import sys
import time
import traceback
import unittest

from . import ckptd


class Result(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.passed = 0
        self.failed = 0
        self.skipped_n = 0
        self._t0 = time.time()
        self._subfail = False

    def _name(self, test):
        tid = test.id()
        parts = tid.split(".")
        return ".".join(parts[-2:]) if len(parts) > 2 else tid

    def startTest(self, test):
        super().startTest(test)
        self._t0 = time.time()

    def _elapsed(self):
        return "%.2fs" % (time.time() - self._t0)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1
        print("PASS %s (%s)" % (self._name(test), self._elapsed()), flush=True)

    def _fail(self, test, err, kind):
        self.failed += 1
        etype, value, tb = err
        msg = str(value).strip() or etype.__name__
        print("FAIL %s (%s): %s" % (self._name(test), self._elapsed(), msg.splitlines()[0][:300]),
              flush=True)
        try:
            text = self._exc_info_to_string(err, test)
        except Exception:
            text = "".join(traceback.format_exception(etype, value, tb))
        print("  " + text.rstrip().replace("\n", "\n  "), flush=True)
        for d in ckptd.live_daemons():
            print("  --- log of %s (%s), last lines ---" % (d.name, d.log_path))
            print("  " + d.log_tail(30).replace("\n", "\n  "), flush=True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err, "failure")

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(test, err, "error")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skipped_n += 1
        print("SKIP %s: %s" % (self._name(test), reason), flush=True)

    def addSubTest(self, test, subtest, err):
        # Subtests are parts of one counted test: a failing one fails the test.
        if err is not None:
            super().addSubTest(test, subtest, err)
            etype, value, tb = err
            text = (str(value).strip() or etype.__name__)[:1500]
            print("  subtest %s failed: %s" % (subtest._subDescription(), text.replace("\n", "\n    ")),
                  flush=True)
            self._subfail = True

    def stopTest(self, test):
        super().stopTest(test)


def _definition_order(module):
    """Test classes and methods in source order, not alphabetical."""
    loader = unittest.TestLoader()
    classes = [
        c for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, unittest.TestCase) and c.__module__ == module.__name__
    ]

    def line_of(obj):
        try:
            return inspect.getsourcelines(obj)[1]
        except (OSError, TypeError):
            return 10 ** 9

    classes.sort(key=line_of)
    suite = unittest.TestSuite()
    for c in classes:
        names = loader.getTestCaseNames(c)
        order = getattr(c, "_order", None)

        def key(n, c=c, order=order):
            if order and n in order:
                return (order.index(n), 0)
            fn = getattr(c, n)
            return (10 ** 8, line_of(fn))

        for n in sorted(names, key=key):
            suite.addTest(c(n))
    return suite


class _SubtestAware(Result):
    """Counts each test once: a test whose subtests failed is one failure."""

    def startTest(self, test):
        self._subfail = False
        self._counted = False
        super().startTest(test)

    def addSuccess(self, test):
        self._counted = True
        if self._subfail:
            self._fail_subtests(test)
            return
        super().addSuccess(test)

    def addFailure(self, test, err):
        self._counted = True
        super().addFailure(test, err)

    def addError(self, test, err):
        self._counted = True
        super().addError(test, err)

    def addSkip(self, test, reason):
        self._counted = True
        super().addSkip(test, reason)

    def _fail_subtests(self, test):
        self.failed += 1
        print("FAIL %s (%s): subtests failed (above)" % (self._name(test), self._elapsed()),
              flush=True)
        for d in ckptd.live_daemons():
            print("  --- log of %s (%s), last lines ---" % (d.name, d.log_path))
            print("  " + d.log_tail(30).replace("\n", "\n  "), flush=True)

    def stopTest(self, test):
        if not self._counted:
            self._counted = True
            if self._subfail:
                self._fail_subtests(test)
            else:
                self.failed += 1
                print("FAIL %s: finished without a result" % self._name(test), flush=True)
        super().stopTest(test)


def _on_term(signum, frame):
    raise KeyboardInterrupt("terminated by signal %d" % signum)


def main():
    module = sys.modules["__main__"]
    signal.signal(signal.SIGTERM, _on_term)
    suite = _definition_order(module)
    result = _SubtestAware()
    t0 = time.time()
    try:
        suite.run(result)
    except KeyboardInterrupt as e:
        print("INTERRUPTED: %s" % e, flush=True)
        result.failed += 1
    finally:
        for d in ckptd.live_daemons():
            d.kill()
    name = os.path.basename(module.__file__)
    line = "%d passed, %d failed" % (result.passed, result.failed)
    if result.skipped_n:
        line += ", %d skipped" % result.skipped_n
    summary = os.environ.get("CKPTD_IT_SUMMARY")
    if not summary:
        print(line, flush=True)
    else:
        # run.sh prints the one "N passed, M failed" line for the whole suite.
        print("-- %s: pass %d, fail %d, skip %d (%.1fs)"
              % (name, result.passed, result.failed, result.skipped_n, time.time() - t0), flush=True)
        with open(summary, "w") as f:
            f.write("%d %d %d\n" % (result.passed, result.failed, result.skipped_n))
    sys.exit(1 if result.failed else 0)
