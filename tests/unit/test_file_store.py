"""Files on disk, records in Redis: reachable while the record lives, swept after, nothing left on a failure."""

from __future__ import annotations

import base64
import os
import stat
import time
from pathlib import Path

import fakeredis
import pytest
import redis

from edge.file_store import FileStore


@pytest.fixture
def store(fake_redis: fakeredis.FakeRedis, tmp_path: Path) -> FileStore:
    return FileStore(fake_redis, "test", tmp_path / "files", sweep_interval=3600)


def test_the_bytes_are_a_private_file_and_redis_holds_only_the_record(
    store: FileStore, fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    store.put("uploads", "a" * 32, data, mime="image/png", name="a.png", ttl=60)
    got = store.get("uploads", "a" * 32)
    assert got is not None and (got.data, got.mime, got.name) == (data, "image/png", "a.png")
    record = fake_redis.hgetall("test:file:" + "a" * 32)
    assert record == {"mime": "image/png", "name": "a.png", "size": "100000", "owner": ""}
    assert 0 < fake_redis.ttl("test:file:" + "a" * 32) <= 60
    path = tmp_path / "files" / "uploads" / ("a" * 32)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_expired_record_makes_the_file_unreachable_at_once_and_the_sweep_deletes_it(
    store: FileStore, fake_redis: fakeredis.FakeRedis, tmp_path: Path
) -> None:
    store.put("mail", "b" * 32, b"old", mime="text/plain", name="old.txt", ttl=60)
    store.put("mail", "c" * 32, b"live", mime="text/plain", name="live.txt", ttl=60)
    fake_redis.delete("test:email:attachment:" + "b" * 32)  # its TTL passed
    assert store.get("mail", "b" * 32) is None
    assert store.sweep("mail") == 0  # younger than the grace period: perhaps its record is being written
    assert store.sweep("mail", now=time.time() + 120) == 1
    assert sorted(p.name for p in (tmp_path / "files" / "mail").iterdir()) == ["c" * 32]
    assert store.get("mail", "c" * 32) is not None


def test_a_record_that_cannot_be_written_leaves_no_file(tmp_path: Path) -> None:
    down = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens there
    store = FileStore(down, "test", tmp_path / "files", sweep_interval=3600)
    with pytest.raises(redis.ConnectionError):
        store.put("uploads", "d" * 32, b"bytes", mime="text/plain", name="x.txt", ttl=60)
    assert list((tmp_path / "files" / "uploads").iterdir()) == []


def test_records_from_before_the_move_to_disk_are_still_served(
    store: FileStore, fake_redis: fakeredis.FakeRedis
) -> None:
    fake_redis.hset("test:file:" + "e" * 32, mapping={"data": base64.b64encode(b"legacy").decode(),
                                                       "mime": "text/plain", "name": "l.txt", "size": 6})
    got = store.get("uploads", "e" * 32)
    assert got is not None and got.data == b"legacy"


@pytest.mark.parametrize("file_id", ["../etc/passwd", "a/b", "é" * 4, ""])
def test_only_plain_ids_name_a_file(store: FileStore, file_id: str) -> None:
    with pytest.raises(ValueError):
        store.put("uploads", file_id, b"x", mime="text/plain", name="x", ttl=1)
