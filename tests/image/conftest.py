"""Prints the image boot timings at the end of the test run (pytest hides a passing test's
output)."""

from __future__ import annotations

import pytest

BOOT_TIMINGS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in BOOT_TIMINGS:
        terminalreporter.write_line(line)
