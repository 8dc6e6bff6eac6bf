"""The edge's operator routes on a fake Redis: /v1/status, /metrics, /status; and request counting."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from edge.observability import channel_of
from tasks.keys import Keys
from tasks.settings import Settings
from telemetry import metrics
from tests.support.edge import EdgeApp
from tests.support.factories import keyed


@pytest.fixture
def client(edge_app: EdgeApp) -> FlaskClient:
    return keyed(edge_app(key_prefix="test", status_page_refresh=2.5).test_client())


def test_status_shows_heartbeats_queues_helpers_and_dead_letters(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    now = time.time()
    fake_redis.hset(keys.workers, "io@h/7", json.dumps(
        {"hostname": "io@h", "pid": 7, "kind": "worker", "queues": ["convert", "deliver"], "interval": 5, "ts": now}))
    fake_redis.rpush("core", "t1", "t2")
    fake_redis.lpush(keys.dead_letters, json.dumps({"kind": "delivery", "message_id": "m1", "reason": "HTTP 400",
                                                    "at": "2026-01-01T00:00:00+00:00"}))
    body = client.get("/v1/status").get_json()
    assert body["queues"] == {"core": 2, "deliver": 0, "convert": 0}
    assert body["workers_alive"] == {"convert": 1, "core": 0, "deliver": 1}
    assert body["workers"][0]["hostname"] == "io@h" and body["workers"][0]["alive"] is True
    assert body["dead_letters"] == 1 and body["recent_dead_letters"][0]["message_id"] == "m1"
    assert body["helpers"] == [] and "ping" not in body
    assert body["metrics"]["messages_accepted"] == 0


def test_metrics_is_prometheus_text_with_the_live_gauges(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.rpush("deliver", "t1")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}
    assert found[("switchboard_queue_depth", (("queue", "deliver"),))] == 1
    assert found[("switchboard_workers_alive", (("queue", "core"),))] == 0
    assert found[("switchboard_dead_letters", ())] == 0


def test_requests_are_counted_by_channel_and_status(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    fields = (metrics.series_field("switchboard_http_requests_total", (("channel", "api"), ("status", "202"))),
              metrics.series_field("switchboard_http_requests_total", (("channel", "api"), ("status", "400"))),
              metrics.series_field("switchboard_messages_accepted_total", (("channel", "api"),)))

    def counts() -> list[float]:
        metrics.recorder().flush()  # the recorder is the process's: earlier tests' counts land here too
        counters = fake_redis.hgetall(Keys("test").metrics_counters)
        return [float(counters.get(field, 0)) for field in fields]

    before = counts()
    client.post("/v1/messages", json={"user": "al", "text": "hi"})
    client.post("/v1/messages", json={"user": "al"})
    assert [after - earlier for after, earlier in zip(counts(), before, strict=True)] == [1, 1, 1]


def test_the_status_page_has_a_strict_csp_and_its_refresh_period(client: FlaskClient) -> None:
    response = client.get("/status")
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    page = response.get_data(as_text=True)
    assert 'data-refresh-seconds="2.5"' in page and "<script>" not in page
    assert client.get("/status/static/status.js").status_code == 200


@pytest.mark.parametrize(("rule", "channel"), [
    ("/v1/messages", "api"), ("/v1/messages/<message_id>", "api"), ("/v1/files", "api"),
    ("/v1/channels/twilio/sms", "twilio"), ("/v1/channels/telegram", "telegram"), ("/chat", "webchat"),
    ("/v1/helpers/<name>/heartbeat", "helpers"), ("/metrics", "operations"), ("/status/static/<path:filename>",
                                                                              "operations"),
    (None, "unmatched"),
])
def test_a_request_is_counted_under_its_routes_channel(rule: str | None, channel: str) -> None:
    assert channel_of(rule) == channel


def test_status_and_metrics_show_each_helper_with_its_circuit_and_queue(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, settings: Settings
) -> None:
    from redis_stores.helper_registry import registry_from_settings

    registry = registry_from_settings(fake_redis, Keys("test"), settings)
    manifest = {"name": "calc", "url": "http://127.0.0.1:8100", "version": "1.0", "description": "math",
                "capabilities": [{"name": "calculate", "description": "d", "input_schema": {"type": "object"},
                                  "output_schema": {"type": "object"}}]}
    registry.register(manifest, "whsec_x")
    for _ in range(settings.circuit_failure_threshold):
        registry.record_failure("calc", "HTTP 500")
    fake_redis.rpush("helper.calc", "t1")
    body = client.get("/v1/status").get_json()
    (helper,) = body["helpers"]
    assert helper["name"] == "calc" and helper["health"]["circuit"] == "open"
    assert helper["queue"] == "helper.calc" and helper["queue_depth"] == 1
    assert body["queues"]["helper.calc"] == 1 and body["workers_alive"]["helper.calc"] == 0
    text = client.get("/metrics").get_data(as_text=True)
    assert 'switchboard_helper_circuit_open{helper="calc"} 1.0' in text
    assert 'switchboard_queue_depth{queue="helper.calc"} 1.0' in text
