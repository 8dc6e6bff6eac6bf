"""The unit tests' stores over fakeredis; ``fake_redis`` and ``settings`` are tests/support/fixtures.py's."""

from __future__ import annotations

import fakeredis
import pytest

from redis_stores.messages import MessageStore
from tasks.keys import Keys


@pytest.fixture
def keys() -> Keys:
    return Keys("test")


@pytest.fixture
def message_store(fake_redis: fakeredis.FakeRedis, keys: Keys) -> MessageStore:
    return MessageStore(fake_redis, keys, status_ttl=3600, idempotency_ttl=600)
