from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.settings import Settings, load_settings
from tests.factories import API_KEYS


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    yield client
    client.flushall()


@pytest.fixture
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    files = tmp_path_factory.mktemp("files")  # uploads and mail attachments (FILES_DIR), never the repository's
    return load_settings({}, switchboard_secret="whsec_" + "A" * 43 + "=", files_dir=str(files), api_keys=API_KEYS)


@pytest.fixture
def keys() -> Keys:
    return Keys("test")


@pytest.fixture
def message_store(fake_redis: fakeredis.FakeRedis, keys: Keys) -> MessageStore:
    return MessageStore(fake_redis, keys, status_ttl=3600, idempotency_ttl=600)
