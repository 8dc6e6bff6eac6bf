from __future__ import annotations

import subprocess
import sys

import fakeredis
import pytest

from core_worker.sessions import LeaseLost, SessionStore, Turn
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tests.support.factories import envelope


@pytest.fixture
def sessions(fake_redis: fakeredis.FakeRedis, keys: Keys) -> SessionStore:
    return SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=600, status_ttl=3600, max_turns=2)


def admit(store: MessageStore, session_id: str = "api:alice", text: str = "hi") -> str:
    env = envelope(session_id=session_id, text=text)
    store.admit(env)
    return env.message_id


def test_only_one_worker_holds_a_session(sessions: SessionStore) -> None:
    first = sessions.acquire("s")
    assert first is not None
    assert sessions.acquire("s") is None
    sessions.release(first)
    assert sessions.acquire("s") is not None


def test_each_lease_gets_a_larger_fencing_token(sessions: SessionStore) -> None:
    first = sessions.acquire("s")
    assert first is not None
    sessions.release(first)
    second = sessions.acquire("s")
    assert second is not None and second.token > first.token


def test_messages_come_out_in_arrival_order(sessions: SessionStore, message_store: MessageStore) -> None:
    ids = [admit(message_store, text=str(i)) for i in range(3)]
    lease = sessions.acquire("api:alice")
    assert lease is not None
    seen = []
    while (head := sessions.head("api:alice")) is not None:
        seen.append(head)
        sessions.finish(lease, head, status="answered", field="reply", value="{}")
        sessions.pop(lease, head)
    assert seen == ids


def test_a_stale_holder_cannot_write_after_its_lease_was_taken_over(
    sessions: SessionStore, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    message_id = admit(message_store)
    stale = sessions.acquire("api:alice")
    assert stale is not None
    fake_redis.delete(keys.session_lock("api:alice"))  # the lease expired while the holder stalled
    fresh = sessions.acquire("api:alice")
    assert fresh is not None
    with pytest.raises(LeaseLost):
        sessions.finish(stale, message_id, status="answered", field="reply", value="{}",
                        turns=(Turn("user", "hi", message_id),))
    with pytest.raises(LeaseLost):
        sessions.pop(stale, message_id)
    assert sessions.history("api:alice") == []
    assert sessions.head("api:alice") == message_id


def test_finishing_records_turns_trims_history_and_sets_a_ttl(
    sessions: SessionStore, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    lease = sessions.acquire("api:alice")
    assert lease is not None
    for i in range(3):
        message_id = admit(message_store, text=f"q{i}")
        turns = (Turn("user", f"q{i}", message_id), Turn("assistant", f"a{i}", message_id))
        sessions.finish(lease, message_id, status="answered", field="reply", value='{"text": "a"}', turns=turns)
        sessions.pop(lease, message_id)
        assert message_store.get(message_id).status == "answered"  # type: ignore[union-attr]
    history = sessions.history("api:alice")
    assert [t.content for t in history] == ["q1", "a1", "q2", "a2"]  # max_turns=2
    assert 0 < fake_redis.ttl(keys.session_history("api:alice")) <= 600


def test_only_the_head_can_be_finished(sessions: SessionStore, message_store: MessageStore) -> None:
    admit(message_store)
    second = admit(message_store)
    lease = sessions.acquire("api:alice")
    assert lease is not None
    with pytest.raises(LeaseLost):
        sessions.finish(lease, second, status="answered", field="reply", value="{}")


def test_a_lease_held_by_a_dead_process_on_this_host_is_taken_over(
    sessions: SessionStore, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    fake_redis.set(keys.session_lock("s"), f"7|{socket.gethostname()}|{dead.stdout.strip()}", px=60_000)
    lease = sessions.acquire("s")
    assert lease is not None and lease.token >= 1


def test_a_lease_held_by_a_live_process_elsewhere_is_respected(
    sessions: SessionStore, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    fake_redis.set(keys.session_lock("s"), "7|another-host|1", px=60_000)
    assert sessions.acquire("s") is None


def test_renewal_fails_once_the_lease_is_gone(
    sessions: SessionStore, fake_redis: fakeredis.FakeRedis, keys: Keys
) -> None:
    lease = sessions.acquire("s")
    assert lease is not None and sessions.renew(lease)
    fake_redis.delete(keys.session_lock("s"))
    assert not sessions.renew(lease)
