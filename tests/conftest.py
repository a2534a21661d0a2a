"""Suite-wide policy.

A test may skip only when a binary or data set is missing on a developer's
own machine. In CI (``CI=true``), where `.ci/run` installs everything, a
skipped test fails the run, so a missing install step cannot hide behind a
green build.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(f"{report.nodeid}: {report.longrepr[-1] if isinstance(report.longrepr, tuple) else ''}")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _in_ci() and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:  # noqa: ANN001
    if _in_ci() and _skipped:
        terminalreporter.write_line(f"CI: {len(_skipped)} test(s) skipped; every test must run in CI:", red=True)
        for line in _skipped:
            terminalreporter.write_line(f"  {line}")
