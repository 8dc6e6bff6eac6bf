"""The fault suite prints its summary; its fixtures (real Redis, real processes) are tests/support/fixtures.py's."""

from __future__ import annotations

import pytest

from tests.support.traffic import SUMMARY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every scenario's ``faults: ...`` line once more at the end, so CI output shows them without ``-s``."""
    if SUMMARY:
        terminalreporter.section("fault scenarios")
        for line in SUMMARY:
            terminalreporter.write_line(line)
