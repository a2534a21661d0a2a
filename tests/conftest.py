"""Suite-wide policy.

A test may skip only when a binary or data set is missing on a developer's
own machine. In CI (``CI=true``; `.ci/run` sets it), where `.ci/run` installs
everything, a skip fails the run, so a missing install step cannot hide
behind a green build. That includes skips raised while collecting a module
(``pytest.importorskip`` or ``pytest.skip(allow_module_level=True)`` at
module level), which never reach a test report.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return str(longrepr[-1])
    return str(longrepr or "")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(f"{report.nodeid}: {_reason(report)}")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _skipped.append(f"{report.nodeid} (whole module, at collection): {_reason(report)}")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _in_ci() and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:  # noqa: ANN001
    if _in_ci() and _skipped:
        terminalreporter.write_line(f"CI: {len(_skipped)} skip(s); every test must run in CI:", red=True)
        for line in _skipped:
            terminalreporter.write_line(f"  {line}")
