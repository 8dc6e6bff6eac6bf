"""The shared fixtures of every test directory, as plugins (pytest reads ``pytest_plugins`` only here)."""

pytest_plugins = ["tests.support.fixtures", "tests.support.llm_fixtures"]
