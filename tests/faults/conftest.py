"""The fault suite reuses the integration fixtures (real Redis, real processes) and prints its summary."""

from __future__ import annotations

import pytest

from tests.faults.traffic import SUMMARY
from tests.integration.conftest import (  # noqa: F401 - fixtures are found by name
    callbacks,
    clean_redis,
    make_system,
    own_redis,
    pytest_runtest_makereport,
    redis_server,
    secret,
    tiny_model_file,
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Every scenario's ``faults: ...`` line once more at the end, so CI output shows them without ``-s``."""
    if SUMMARY:
        terminalreporter.section("fault scenarios")
        for line in SUMMARY:
            terminalreporter.write_line(line)
