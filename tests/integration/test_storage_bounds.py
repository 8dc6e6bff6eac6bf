"""Redis memory is bounded, and a nearly full Redis turns admission into a clear 503 (issue 17 item 6).

Against the real edge and workers and a real redis-server whose ``maxmemory``
the test moves: past ``REDIS_ADMIT_MAX_FILL`` messages and uploads get 503
with a JSON body naming the problem, the edge stays up, and once there is
room again messages are taken and answered.  Redis itself refusing a write
(OOM under ``noeviction``) is the same 503, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.support.factories import AUTH, OTHER_AUTH
from tests.support.harness import RedisServer, System, wait_until

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]


@pytest.fixture
def system(make_system: MakeSystem) -> System:
    # Admission stops at half of maxmemory, so the test can put Redis well between that and full (used_memory
    # moves by a few percent as connections come and go) without Redis refusing the writes itself.
    return make_system(REDIS_ADMIT_MAX_FILL="0.5").start_all()


@pytest.fixture
def client(clean_redis: RedisServer) -> Iterator[redis.Redis]:
    client = clean_redis.client()
    yield client
    client.config_set("maxmemory", "512mb")  # the harness's own bound, for the next test


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def wait_answered(system: System, message_id: str) -> None:
    wait_until(lambda: system.status(message_id, wait=10)["status"] == "answered", 120, "its answer")


def upload(system: System) -> requests.Response:
    return requests.post(f"{system.base_url}/v1/files", data={"user": "alice"},
                         files={"file": ("notes.txt", b"one two three", "text/plain")}, headers=AUTH, timeout=15)


def test_a_nearly_full_redis_gets_503s_naming_it_then_admits_again(system: System, client: redis.Redis) -> None:
    assert int(str(client.config_get("maxmemory")["maxmemory"])) > 0  # the harness Redis is bounded
    client.config_set("maxmemory", str(int(used(client) / 0.75)))  # 75% full: past the 50% of this system
    wait_until(lambda: "nearly full" in system.post(user="alice", text="hello").text, 10, "the edge to see it")
    refused = system.post(user="bob", text="hello")
    assert refused.status_code == 503 and "storage is nearly full" in refused.json()["error"]
    assert refused.headers["Retry-After"]
    assert upload(system).status_code == 503
    assert requests.get(f"{system.base_url}/healthz", timeout=5).status_code == 200
    metrics = requests.get(f"{system.base_url}/metrics", timeout=5).text
    assert "switchboard_redis_memory_fill_ratio 0." in metrics and "switchboard_redis_used_memory_bytes" in metrics
    client.config_set("maxmemory", "512mb")
    wait_until(lambda: system.post(user="carol", text="hello").status_code == 202, 10, "room again")
    accepted = system.post(user="dave", text="hello again").json()
    assert system.status(accepted["message_id"], wait=30)["status"] == "answered"


def test_redis_refusing_a_write_is_a_503_not_a_500(make_system: MakeSystem, client: redis.Redis) -> None:
    # The edge's reading is taken once and kept, so it does not stop early: Redis itself refuses.
    system = make_system(REDIS_FILL_CHECK_INTERVAL="3600").start_all()
    assert system.post(user="alice", text="hello").status_code == 202
    client.config_set("maxmemory", str(used(client) - 1024))
    refused = system.post(user="bob", text="x" * 2000)
    assert refused.status_code == 503 and "storage is full" in refused.json()["error"], refused.text
    assert requests.get(f"{system.base_url}/healthz", timeout=5).status_code == 200


def test_uploads_live_on_disk_not_in_redis(system: System, client: redis.Redis) -> None:
    # Issue 17: three 10 MB uploads took Redis' used_memory from 2.3 to 66 MB, kept for 24 h.
    before = used(client)
    blobs = [bytes([65 + n]) * (10 * 1_048_576 - 1) for n in range(3)]
    for n, blob in enumerate(blobs):
        answer = requests.post(f"{system.base_url}/v1/files", data={"user": f"u{n}"},
                               files={"file": (f"big{n}.txt", blob, "text/plain")}, headers=AUTH, timeout=60)
        assert answer.status_code == 202, answer.text
        got = requests.get(answer.json()["file"]["url"], headers=AUTH, timeout=30)
        assert got.status_code == 200 and got.content == blob
        wait_answered(system, answer.json()["message_id"])
    grown = used(client) - before
    assert grown < 2 * 1_048_576, f"Redis grew by {grown} bytes for 30 MB of uploads"
    files = Path(system.env["FILES_DIR"]) / "uploads"
    assert sum(p.stat().st_size for p in files.iterdir()) == sum(map(len, blobs))


def test_quotas_hold_on_a_real_redis_and_bound_only_the_caller_past_them(make_system: MakeSystem) -> None:
    """The quota scripts on the real server (fakeredis runs its own Lua): no worker runs, so nothing is answered
    and every message stays open."""
    system = make_system(QUOTA_OPEN_MESSAGES="3", QUOTA_STORED_BYTES="30")
    system.start_edge()
    assert [system.post(user=f"u{n}", text="hi").status_code for n in range(3)] == [202, 202, 202]
    refused = system.post(user="u3", text="hi")
    assert refused.status_code == 429 and "QUOTA_OPEN_MESSAGES" in refused.json()["error"]
    other = requests.post(f"{system.base_url}/v1/messages", json={"user": "u3", "text": "hi"}, headers=OTHER_AUTH,
                          timeout=15)
    assert other.status_code == 202  # another tenant goes on

    def send_file(size: int) -> requests.Response:
        return requests.post(f"{system.base_url}/v1/files", data={"user": "f"}, headers=OTHER_AUTH, timeout=15,
                             files={"file": ("notes.txt", b"x" * size, "text/plain")})

    assert send_file(20).status_code == 202
    too_much = send_file(20)
    assert too_much.status_code == 429 and "QUOTA_STORED_BYTES" in too_much.json()["error"]
    assert int(too_much.headers["Retry-After"]) > 1
    assert send_file(5).status_code == 202
