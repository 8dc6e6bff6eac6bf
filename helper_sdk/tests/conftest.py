"""Fixtures of the SDK's tests: the sample helper, a signing secret, a running FakeCore."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import sdk_sample_helper
from helper_sdk import Helper
from helper_sdk.testing import FakeCore, HelperClient, new_secret


@pytest.fixture
def sample_helper() -> Helper:
    return sdk_sample_helper.helper


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def sample_client(sample_helper: Helper, secret: str) -> HelperClient:
    return HelperClient(sample_helper, secret=secret)


@pytest.fixture
def fake_core() -> Iterator[FakeCore]:
    with FakeCore(heartbeat_interval=0.05, expires_in=10) as core:  # a loaded machine may pause a beat
        yield core
