"""Replaying dead letters: what is refused, and why a replay can never answer twice."""

from __future__ import annotations

import json

import fakeredis
import pytest
import redis

from redis_stores.helper_registry import HelperRegistry
from redis_stores.messages import MessageStore
from redis_stores.replay import Replayer, ReplayRefused
from tasks.keys import Keys
from tasks.names import DELIVER_REPLY, HANDLE_MESSAGE
from tasks.schemas import ReplyRoute
from tests.support.edge import RecordingCelery
from tests.support.factories import envelope


@pytest.fixture
def replayer(fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore,
             celery_app: RecordingCelery) -> Replayer:
    helpers = HelperRegistry(fake_redis, keys, heartbeat_interval=10, missed_heartbeats=3, failure_threshold=3,
                             reset_seconds=30)
    return Replayer(fake_redis, keys, message_store, helpers, celery_app)


def admitted(store: MessageStore, **fields: str) -> str:
    env = envelope(reply=ReplyRoute("http://127.0.0.1:9/hook", {"chat": 1}))
    store.admit(env)
    store.update(env.message_id, **fields)
    return env.message_id


def test_a_dead_reply_is_queued_once_with_its_own_webhook_id(
    replayer: Replayer, message_store: MessageStore, celery_app: RecordingCelery, fake_redis: fakeredis.FakeRedis,
    keys: Keys,
) -> None:
    mid = admitted(message_store, status="answered", delivery="dead",
                   reply=json.dumps({"text": "Paris.", "created_at": "2026-01-01T00:00:00+00:00"}))
    result = replayer.replay(mid)
    assert result.kind == "delivery" and result.new_message_id is None
    ((name, (payload,)),) = celery_app.sent
    assert name == DELIVER_REPLY and payload["message_id"] == mid and payload["text"] == "Paris."
    assert payload["reply"] == {"callback_url": "http://127.0.0.1:9/hook", "context": {"chat": 1},
                                "stream_interval": 0.0, "owner": ""}
    assert fake_redis.lrange(keys.session_outbox("api:alice"), 0, -1) == [mid]
    with pytest.raises(ReplayRefused, match="replaying"):
        replayer.replay(mid)
    assert len(celery_app.sent) == 1


def test_a_reply_that_was_delivered_is_never_replayed(replayer: Replayer, message_store: MessageStore) -> None:
    mid = admitted(message_store, status="answered", delivery="delivered", reply=json.dumps({"text": "hi"}))
    with pytest.raises(ReplayRefused, match="delivered"):
        replayer.replay(mid, "delivery")


def test_a_failed_message_is_answered_again_as_one_new_message(
    replayer: Replayer, message_store: MessageStore, celery_app: RecordingCelery
) -> None:
    mid = admitted(message_store, status="failed", error="boom")
    first = replayer.replay(mid)
    assert first.kind == "poison" and first.new_message_id and first.new_message_id != mid and not first.already
    assert celery_app.sent == [(HANDLE_MESSAGE, [first.new_message_id, "api:alice"])]
    record = message_store.get(first.new_message_id)
    assert record is not None and record.envelope["metadata"]["replay_of"] == mid and record.status == "queued"
    second = replayer.replay(mid)
    assert second.already and second.new_message_id == first.new_message_id
    assert len(celery_app.sent) == 1
    with pytest.raises(ReplayRefused, match="poison"):
        replayer.replay(mid, "delivery")


def test_unknown_and_unfinished_messages_are_refused(replayer: Replayer, message_store: MessageStore) -> None:
    with pytest.raises(ReplayRefused, match="no message record"):
        replayer.replay("nope")
    mid = admitted(message_store, status="processing")
    with pytest.raises(ReplayRefused, match="no reply yet"):
        replayer.replay(mid)
    with pytest.raises(ReplayRefused, match="not failed"):
        replayer.replay(mid, "poison")


def test_a_replay_that_cannot_be_queued_leaves_nothing_half_done(
    replayer: Replayer, message_store: MessageStore, celery_app: RecordingCelery
) -> None:
    mid = admitted(message_store, status="answered", delivery="dead", reply=json.dumps({"text": "hi"}))
    celery_app.broken = True
    with pytest.raises(redis.ConnectionError):
        replayer.replay(mid)
    celery_app.broken = False
    record = message_store.get(mid)
    assert record is not None and record.delivery == "dead"  # can be replayed once the broker is back
    assert replayer.replay(mid).kind == "delivery"
