from __future__ import annotations

import time

import fakeredis

from core_worker.sessions import SessionStore
from core_worker.sweeper import Sweeper
from redis_stores.messages import MessageStore
from tasks.enqueue import QueuedTask
from tasks.keys import Keys
from tests.support.factories import envelope


def test_a_session_left_without_a_task_is_kicked_and_an_active_one_is_not(
    fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore
) -> None:
    kicked: list[tuple[str, str]] = []
    sweeper = Sweeper(fake_redis, keys, message_store, lambda m, s: kicked.append((m, s)), interval=1, age=60)
    stalled, busy = envelope(session_id="api:a"), envelope(session_id="api:b")
    message_store.admit(stalled)
    message_store.admit(busy)
    sessions = SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=60, status_ttl=60, max_turns=2)
    assert sessions.acquire("api:b") is not None
    assert sweeper.sweep_once() == []  # both are fresh
    assert sweeper.sweep_once(now=time.time() + 120) == ["api:a"]
    assert kicked == [(stalled.message_id, "api:a")]


def test_a_drained_session_leaves_the_pending_set(
    fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore
) -> None:
    env = envelope()
    message_store.admit(env)
    assert fake_redis.smembers(keys.pending_sessions) == {env.session_id}
    sessions = SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=60, status_ttl=60, max_turns=2)
    lease = sessions.acquire(env.session_id)
    assert lease is not None
    sessions.finish(lease, env.message_id, status="answered", field="reply", value="{}")
    sessions.pop(lease, env.message_id)
    assert fake_redis.smembers(keys.pending_sessions) == set()


def test_an_outbox_head_whose_delivery_task_was_lost_is_sent_again(
    fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore
) -> None:
    """Found by the fault suite (kill-io-worker): a delivery task lost with its io worker left its reply at the
    head of the outbox for good, and every later reply of the session spinning behind it."""
    resent: list[str] = []
    sweeper = Sweeper(fake_redis, keys, message_store, lambda m, s: None, interval=1, age=60,
                      redeliver=lambda record: resent.append(record.message_id))
    env = envelope(session_id="api:a")
    message_store.admit(env)
    sessions = SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=60, status_ttl=60, max_turns=2)
    lease = sessions.acquire("api:a")
    assert lease is not None
    # Answered, its delivery task queued and the head popped, in one step; then the task is lost.
    sessions.finish(lease, env.message_id, status="answered", field="reply", value='{"text": "hi"}',
                    delivery=QueuedTask("deliver", "{}"))
    fake_redis.delete("deliver")

    assert sweeper.sweep_outboxes() == []  # just answered: its delivery task is on its way
    fake_redis.set(keys.delivery_alive(env.message_id), "1")
    assert sweeper.sweep_outboxes(now=time.time() + 120) == []  # a task is retrying it
    fake_redis.delete(keys.delivery_alive(env.message_id))
    fake_redis.set(keys.delivery_claim(env.message_id), "1")
    assert sweeper.sweep_outboxes(now=time.time() + 120) == []  # a worker is posting it right now
    fake_redis.delete(keys.delivery_claim(env.message_id))
    assert sweeper.sweep_outboxes(now=time.time() + 120) == [env.message_id]
    assert sweeper.sweep_outboxes(now=time.time() + 120) == []  # not again at every pass
    assert resent == [env.message_id]


def test_after_a_reconnect_what_has_not_moved_since_is_swept_without_waiting_the_age(
    fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore
) -> None:
    """Found by bench/redis_recovery.py (sigstop-30s): a task Redis handed, as it thawed, to a BRPOP whose worker
    had given the connection up was lost; its conversation waited for the regular sweep (118.9 s)."""
    kicked: list[str] = []
    resent: list[str] = []
    sweeper = Sweeper(fake_redis, keys, message_store, lambda m, s: kicked.append(s), interval=3600, age=3600,
                      redeliver=lambda record: resent.append(record.message_id))
    lost = envelope(session_id="api:lost")
    message_store.admit(lost)
    reconnected = time.time() + 0.01
    assert sweeper.sweep_once(cutoff=reconnected - 10) == []  # it moved after that reconnect: not stalled
    sweeper.start()
    try:
        sweeper.after_reconnect(reconnected)
        deadline = time.monotonic() + 30
        while not kicked and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kicked == ["api:lost"]  # RECOVERY_GRACE after the reconnect, not SWEEP_AGE (an hour here)
        later = envelope(session_id="api:new")
        message_store.admit(later)  # arrived after the reconnect: the regular sweep's business
        assert sweeper.sweep_once(cutoff=reconnected) == ["api:lost"]
    finally:
        sweeper.stop()
        sweeper.join(5)
    assert not sweeper.is_alive()
