"""Worker heartbeats: alive, stale, forgotten; pool processes under their worker."""

from __future__ import annotations

import json

import fakeredis

from tasks.keys import Keys
from telemetry.heartbeat import Heartbeat, alive_per_queue, read_workers


def beat(client: fakeredis.FakeRedis, keys: Keys, field: str, ts: float, **record: object) -> None:
    host, pid = field.split("/")
    client.hset(keys.workers, field, json.dumps({"hostname": host, "pid": int(pid), "interval": 5.0, "ts": ts,
                                                 **record}))


def test_workers_are_alive_stale_or_forgotten_by_the_age_of_their_heartbeat(
    fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    beat(fake_redis, keys, "core@a/10", 995.0, kind="worker", queues=["core"])
    beat(fake_redis, keys, "core@b/20", 980.0, kind="worker", queues=["core"])  # 4 beats missed
    beat(fake_redis, keys, "io@c/30", 100.0, kind="worker", queues=["deliver", "convert"])  # long gone
    workers = read_workers(fake_redis, keys, now=1000.0, forget_after=600)
    assert [(w["hostname"], w["alive"]) for w in workers] == [("core@a", True), ("core@b", False)]
    assert set(fake_redis.hkeys(keys.workers)) == {"core@a/10", "core@b/20"}  # the forgotten one is deleted
    assert alive_per_queue(workers, ["convert", "core", "deliver"]) == {"convert": 0, "core": 1, "deliver": 0}


def test_pool_processes_are_shown_under_their_worker(fake_redis: fakeredis.FakeRedis, keys: Keys) -> None:
    beat(fake_redis, keys, "core@a/10", 999.0, kind="worker", queues=["core"])
    beat(fake_redis, keys, "core@a/11", 999.0, kind="pool", parent_pid=10, queues=["core"],
         model={"backend": "llama_cpp", "loaded": True})
    (worker,) = read_workers(fake_redis, keys, now=1000.0)
    assert [p["pid"] for p in worker["processes"]] == [11]
    assert alive_per_queue([worker], ["core"]) == {"core": 1}  # the pool process is not a second worker


def test_a_heartbeat_writes_its_record_and_a_clean_stop_removes_it(fake_redis: fakeredis.FakeRedis, keys: Keys) -> None:
    heartbeat = Heartbeat(fake_redis, keys, "io@h", 5.0, lambda: {"kind": "worker", "queues": ["deliver"]})
    heartbeat.beat_once()
    (worker,) = read_workers(fake_redis, keys)
    assert worker["hostname"] == "io@h" and worker["queues"] == ["deliver"] and worker["alive"]
    heartbeat.stop()
    assert read_workers(fake_redis, keys) == []
