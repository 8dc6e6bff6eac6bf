from __future__ import annotations

import threading
import time

import fakeredis

from redis_stores.messages import MessageStore
from tasks.enqueue import QueuedTask
from tasks.keys import Keys
from tests.support.factories import envelope


def test_admission_records_the_message_and_queues_it_in_its_session(
    message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    env = envelope()
    assert message_store.admit(env) == (True, env.message_id)
    record = message_store.get(env.message_id)
    assert record is not None and record.status == "queued" and record.envelope["text"] == "hello"
    assert fake_redis.lrange(keys.session_inbox(env.session_id), 0, -1) == [env.message_id]


def test_a_repeated_idempotency_key_returns_the_first_message(message_store: MessageStore) -> None:
    first, second = envelope(), envelope()
    message_store.admit(first, "key-1")
    assert message_store.admit(second, "key-1") == (False, first.message_id)
    assert message_store.get(second.message_id) is None


def test_admission_queues_its_task_atomically(message_store: MessageStore, fake_redis: fakeredis.FakeRedis) -> None:
    env = envelope()
    task = QueuedTask("core", '{"task": 1}')
    assert message_store.admit(env, "key-1", task=task) == (True, env.message_id)
    assert fake_redis.lrange("core", 0, -1) == ['{"task": 1}']
    other = envelope()
    assert message_store.admit(other, "key-1", task=task) == (False, env.message_id)  # duplicate: no task
    assert message_store.admit(env, task=task) == (True, env.message_id)  # a client retry of the same call
    assert fake_redis.llen("core") == 1
    assert fake_redis.lrange(message_store.keys.session_inbox(env.session_id), 0, -1) == [env.message_id]


def test_update_never_resurrects_an_expired_record(message_store: MessageStore) -> None:
    assert message_store.update("gone", status="processing") is False
    assert message_store.get("gone") is None


def test_public_view_matches_the_contract(message_store: MessageStore) -> None:
    env = envelope()
    message_store.admit(env)
    assert message_store.get(env.message_id).public() == {  # type: ignore[union-attr]
        "message_id": env.message_id, "session_id": env.session_id, "status": "queued", "reply": None,
    }


def test_wait_returns_as_soon_as_the_message_is_answered(message_store: MessageStore) -> None:
    env = envelope()
    message_store.admit(env)

    def answer() -> None:
        time.sleep(0.2)
        message_store.update(env.message_id, status="answered", reply='{"text": "hi"}')

    threading.Thread(target=answer).start()
    record = message_store.wait(env.message_id, timeout=5)
    assert record is not None and record.status == "answered" and record.reply == {"text": "hi"}


def test_wait_gives_up_after_its_timeout(message_store: MessageStore) -> None:
    env = envelope()
    message_store.admit(env)
    record = message_store.wait(env.message_id, timeout=0.3)
    assert record is not None and record.status == "queued"
