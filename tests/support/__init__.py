"""Shared test support: harness, fakes, test backends, fixtures.  Never a test module."""
