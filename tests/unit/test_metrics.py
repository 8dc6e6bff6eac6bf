"""Metrics: counted in-process, flushed to Redis in one pipeline, rendered as Prometheus text."""

from __future__ import annotations

import socket

import fakeredis
import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tasks.keys import Keys
from telemetry.metrics import Recorder
from telemetry.metrics_render import Gauge, metric_families


class _Families:
    def __init__(self, client: fakeredis.FakeRedis, keys: Keys, gauges: list[Gauge] | None = None) -> None:
        self.client, self.keys, self.gauges = client, keys, gauges or []

    def collect(self):  # type: ignore[no-untyped-def]
        return metric_families(self.client.hgetall(self.keys.metrics_counters),
                               self.client.hgetall(self.keys.metrics_histograms), self.gauges)


def rendered(client: fakeredis.FakeRedis, keys: Keys, gauges: list[Gauge] | None = None) -> dict[tuple, float]:
    text = generate_latest(_Families(client, keys, gauges)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture
def recorder(fake_redis: fakeredis.FakeRedis, keys: Keys) -> Recorder:
    rec = Recorder()
    rec.configure(lambda: fake_redis, keys, interval=3600)  # flushed by hand in these tests
    return rec


def test_counts_from_several_flushes_and_processes_add_up(
    recorder: Recorder, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    recorder.inc("switchboard_messages_accepted_total", channel="api")
    recorder.inc("switchboard_messages_accepted_total", channel="api")
    recorder.flush()
    other = Recorder()  # another process
    other.configure(lambda: fake_redis, keys, interval=3600)
    other.inc("switchboard_messages_accepted_total", channel="api")
    other.inc("switchboard_messages_accepted_total", channel="telegram")
    other.flush()
    found = rendered(fake_redis, keys)
    assert found[("switchboard_messages_accepted_total", (("channel", "api"),))] == 3
    assert found[("switchboard_messages_accepted_total", (("channel", "telegram"),))] == 1


def test_histograms_render_cumulative_buckets_sum_and_count(
    recorder: Recorder, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    for seconds in (0.02, 0.3, 0.3, 50.0):
        recorder.observe("switchboard_helper_call_seconds", seconds, helper="calc", outcome="ok")
    recorder.flush()
    found = rendered(fake_redis, keys)
    labels = (("helper", "calc"), ("outcome", "ok"))

    def bucket(le: str) -> float:
        return found[("switchboard_helper_call_seconds_bucket", (("helper", "calc"), ("le", le), ("outcome", "ok")))]

    assert [bucket(le) for le in ("0.025", "0.5", "30.0", "+Inf")] == [1, 3, 3, 4]
    assert found[("switchboard_helper_call_seconds_count", labels)] == 4
    assert found[("switchboard_helper_call_seconds_sum", labels)] == pytest.approx(50.62)


def test_every_declared_metric_is_rendered_before_anything_happened(
    fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    text = generate_latest(_Families(fake_redis, keys)).decode()
    for name in ("switchboard_reply_latency_seconds", "switchboard_http_requests_total",
                 "switchboard_dead_letters_total", "switchboard_generation_seconds"):
        assert f"# TYPE {name.removesuffix('_total')}" in text


def test_latency_since_admission_reads_the_admission_time_at_flush(
    recorder: Recorder, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    fake_redis.hset(keys.message("m1"), "created_at", "1000.0")
    recorder.observe_since_admission("switchboard_reply_latency_seconds", "m1", at=1002.5, channel="api")
    recorder.observe_since_admission("switchboard_reply_latency_seconds", "gone", at=1002.5, channel="api")
    recorder.flush()
    found = rendered(fake_redis, keys)
    assert found[("switchboard_reply_latency_seconds_count", (("channel", "api"),))] == 1  # the expired one skipped
    assert found[("switchboard_reply_latency_seconds_sum", (("channel", "api"),))] == 2.5


def test_a_failed_flush_keeps_the_counts_for_the_next_one(
    recorder: Recorder, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    recorder.inc("switchboard_dead_letters_total", kind="poison")
    recorder.observe("switchboard_task_seconds", 0.2, task="core.handle_message", state="SUCCESS")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    broken = redis.Redis(port=port, socket_connect_timeout=0.5)
    with pytest.raises(redis.ConnectionError):
        recorder.flush(broken)
    recorder.inc("switchboard_dead_letters_total", kind="poison")
    recorder.flush()
    found = rendered(fake_redis, keys)
    assert found[("switchboard_dead_letters_total", (("kind", "poison"),))] == 2
    assert found[("switchboard_task_seconds_count", (("state", "SUCCESS"), ("task", "core.handle_message")))] == 1


def test_a_forked_child_does_not_resend_the_parents_counts(
    recorder: Recorder, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    recorder.inc("switchboard_messages_accepted_total", channel="api")
    recorder._after_fork()  # what os.register_at_fork runs in the child
    recorder.inc("switchboard_messages_accepted_total", channel="api")
    recorder.flush()
    assert rendered(fake_redis, keys)[("switchboard_messages_accepted_total", (("channel", "api"),))] == 1


def test_gauges_are_rendered_with_their_labels(fake_redis: fakeredis.FakeRedis, keys: Keys) -> None:
    gauge = Gauge("switchboard_queue_depth", "Tasks waiting.", ("queue",), ((("core",), 3.0), (("deliver",), 0.0)))
    found = rendered(fake_redis, keys, [gauge])
    assert found[("switchboard_queue_depth", (("queue", "core"),))] == 3
    assert found[("switchboard_queue_depth", (("queue", "deliver"),))] == 0


def test_unknown_metric_names_are_a_programming_error(recorder: Recorder) -> None:
    with pytest.raises(KeyError):
        recorder.inc("switchboard_no_such_thing_total")
