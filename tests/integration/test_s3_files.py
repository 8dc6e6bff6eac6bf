"""``FILES_STORE=s3``: file bytes in S3-compatible object storage, the real boto3 against a local S3 server.

moto's server (``moto_server``) speaks the S3 HTTP API on loopback; nothing is mocked in process. It runs
from a venv of its own (``.venv-fakes``, made by ``make test``): installed beside the product, moto's
dependencies changed what the helper processes ran with. The records and their TTLs stay in the real Redis,
exactly as with local files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
import requests

from edge.file_blobs import S3Blobs
from edge.file_store import FileStore
from tests.support.factories import AUTH
from tests.support.harness import ROOT, Proc, RedisServer, System, free_port, wait_until

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]
BUCKET = "switchboard-files"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """(endpoint, a boto3 client): a moto S3 server with the bucket made."""
    server = ROOT / ".venv-fakes" / "bin" / "moto_server"
    if not server.exists():
        pytest.fail(f"{server} is missing: `make test` (or `make integration`) installs moto's S3 server there")
    port = free_port()
    proc = Proc("moto", [str(server), "-H", "127.0.0.1", "-p", str(port)],
                {**os.environ, **CREDENTIALS}, tmp_path)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(endpoint, timeout=1).status_code < 500, 30, "the S3 server")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    proc.stop()


def keys_in(client: Any) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_the_store_keeps_bytes_in_the_bucket_and_sweeps_what_expired(
    s3: tuple[str, Any], clean_redis: RedisServer
) -> None:
    _, client = s3
    redis_client = clean_redis.client()
    store = FileStore(redis_client, "t", S3Blobs(client, BUCKET, "sb/"), sweep_interval=3600)
    store.put("uploads", "a" * 32, b"first file", mime="text/plain", name="a.txt", ttl=60, owner="key:x", quota=100)
    store.put("uploads", "b" * 32, b"second", mime="text/plain", name="b.txt", ttl=60)
    assert sorted(keys_in(client)) == [f"sb/uploads/{'a' * 32}", f"sb/uploads/{'b' * 32}"]
    got = store.get("uploads", "a" * 32)
    assert got is not None and (got.data, got.name, got.owner) == (b"first file", "a.txt", "key:x")
    assert redis_client.ttl("t:file:" + "a" * 32) > 0  # the TTL is the record's, in Redis
    assert store.stored_bytes("key:x") == 10
    store.discard("uploads", "a" * 32, "key:x")
    assert store.get("uploads", "a" * 32) is None and store.stored_bytes("key:x") == 0
    redis_client.delete("t:file:" + "b" * 32)  # b's record expired
    assert store.get("uploads", "b" * 32) is None  # unreachable at once
    assert store.sweep("uploads") == 0  # younger than the grace: it may be being written
    assert store.sweep("uploads", now=time.time() + 120) == 1
    assert keys_in(client) == []


def test_uploads_go_through_the_bucket_end_to_end(make_system: MakeSystem, s3: tuple[str, Any]) -> None:
    endpoint, client = s3
    files_dir = Path(make_system().env["FILES_DIR"])  # a directory of its own, to see it stays empty
    system = make_system(FILES_STORE="s3", FILES_S3_BUCKET=BUCKET, FILES_S3_ENDPOINT_URL=endpoint,
                         FILES_DIR=str(files_dir), LLM_BACKEND="tests.support.scripted_backend:factory",
                         LLM_MAX_TOKENS="200", **CREDENTIALS)
    system.start_all()
    response = requests.post(f"{system.base_url}/v1/files", data={"user": "alice", "text": "what is in it?"},
                             files={"file": ("notes.txt", b"The meeting is on Tuesday.", "text/plain")},
                             headers=AUTH, timeout=15)
    assert response.status_code == 202, response.text
    body = response.json()
    assert keys_in(client) == [f"switchboard/uploads/{body['file']['id']}"]
    assert not any(files_dir.rglob("*")) or not any(p.is_file() for p in files_dir.rglob("*"))
    fetched = requests.get(f"{system.base_url}/v1/files/{body['file']['id']}", headers=AUTH, timeout=15)
    assert fetched.content == b"The meeting is on Tuesday."
    record = system.status(body["message_id"], wait=30)
    assert record["status"] == "answered", system.logs()
    assert "The meeting is on Tuesday." in record["reply"]["text"]  # the converter read it from the bucket


def test_an_unreachable_bucket_is_a_503_and_leaves_nothing_behind(make_system: MakeSystem) -> None:
    """The bucket's server is down: the upload answers 503 naming file storage, never a 500, and its bytes
    go back to the caller's quota."""
    system = make_system(FILES_STORE="s3", FILES_S3_BUCKET=BUCKET, FILES_S3_TIMEOUT="1",
                         FILES_S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", **CREDENTIALS)
    system.start_edge()
    response = requests.post(f"{system.base_url}/v1/files", data={"user": "alice"},
                             files={"file": ("notes.txt", b"hello", "text/plain")}, headers=AUTH, timeout=30)
    assert response.status_code == 503, response.text
    assert "file storage is unavailable" in response.json()["error"]
    assert response.headers["Retry-After"] == "5"
    client = redis.Redis.from_url(system.env["REDIS_URL"])
    assert all(int(client.hget(key, "total") or 0) == 0 for key in client.scan_iter("*:owner:*:files"))
