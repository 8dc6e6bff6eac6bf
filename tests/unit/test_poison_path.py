"""Every admitted message ends, answered or failed, within MAX_ATTEMPTS, whatever stage of answering breaks.

A fault is injected, for good, at each stage of ``handle_message`` (load, lease, history, routing,
generation, finish, delivery enqueue); the task is then run the way Celery retries it. The record's
attempts never pass MAX_ATTEMPTS, the model never runs more often than that, and the session moves on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from core_worker.helper_flow import HelperFlow
from core_worker.processor import FAILURE_TEXT, SessionProcessor
from core_worker.sessions import LeaseLost, SessionStore
from redis_stores.deadletters import DeadLetters
from redis_stores.helper_registry import registry_from_settings
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.schemas import Envelope
from tasks.settings import Settings
from tests.support.factories import CALCULATOR, QueuedDeliveries, ScriptedLLM, delivery_task, envelope

MAX_ATTEMPTS = 3


class Injected(RuntimeError):
    """The fault a test puts into one stage."""


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def processor(
    settings: Settings, fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore, llm: ScriptedLLM,
) -> SessionProcessor:
    sessions = SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=600, status_ttl=600, max_turns=10)
    return SessionProcessor(
        settings=settings.replace(max_attempts=MAX_ATTEMPTS), keys=keys, messages=message_store, sessions=sessions,
        llm=lambda: llm, deliver=delivery_task, dead_letters=DeadLetters(fake_redis, keys),
    )


def run_like_celery(processor: SessionProcessor, env: Envelope) -> int:
    """Run the message's task until it reports done, retrying on any exception as the Celery task does;
    the number of runs it took."""
    for run in range(1, 3 * MAX_ATTEMPTS):
        try:
            if processor.run(env.session_id, env.message_id):
                return run
        except Exception:  # the task logs it and retries
            pass
    raise AssertionError(f"{env.message_id} still waiting after {3 * MAX_ATTEMPTS - 1} runs")


def raising(*_: Any, **__: Any) -> Any:
    raise Injected("injected fault")


def assert_failed_and_moved_on(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    env: Envelope, llm: ScriptedLLM,
) -> None:
    record = message_store.get(env.message_id)
    assert record is not None and record.status == "failed"
    assert record.attempts <= MAX_ATTEMPTS
    assert len(llm.prompts) <= MAX_ATTEMPTS
    assert DeadLetters(fake_redis, keys).recent()[0]["message_id"] == env.message_id
    assert processor.sessions.pending(env.session_id) == 0
    # The person's view says why in safe words, never the exception text.
    assert "Injected" not in json.dumps(record.public()) and "injected" not in json.dumps(record.public())


def inject_load(processor: SessionProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Envelope, "from_dict", classmethod(raising))


def inject_lease(processor: SessionProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(*_: Any, **__: Any) -> Any:
        raise LeaseLost("the lease expired while the model worked")
    monkeypatch.setattr(processor.llm(), "chat", lost)


def inject_history(processor: SessionProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("core_worker.processor.build_messages", raising)


def inject_routing(processor: SessionProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_from_settings(processor.messages.redis, processor.keys, processor.settings)
    registry.register(CALCULATOR, "whsec_x")
    processor.helpers = HelperFlow(registry, processor.llm, "be brief", 64)
    monkeypatch.setattr(processor.helpers, "decide", raising)


def inject_generation(processor: SessionProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    processor.llm().fail_on.add("hello")  # type: ignore[attr-defined]


def inject_finish(processor: SessionProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    finish = processor.sessions.finish

    def finish_fails_for_answers(*args: Any, **kwargs: Any) -> str | None:
        if kwargs.get("status") == "answered":
            raise Injected("recording the answer failed")
        return finish(*args, **kwargs)
    monkeypatch.setattr(processor.sessions, "finish", finish_fails_for_answers)


def inject_delivery(processor: SessionProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    processor.deliver = raising


STAGES: dict[str, Callable[[SessionProcessor, pytest.MonkeyPatch], None]] = {
    "load": inject_load, "lease": inject_lease, "history": inject_history, "routing": inject_routing,
    "generation": inject_generation, "finish": inject_finish, "delivery enqueue": inject_delivery,
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_fault_at_any_stage_fails_the_message_within_max_attempts_and_the_session_moves_on(
    stage: str, processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis,
    keys: Keys, llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = envelope()
    message_store.admit(env)
    STAGES[stage](processor, monkeypatch)
    runs = run_like_celery(processor, env)
    assert runs <= MAX_ATTEMPTS + 1  # the last run may only give up (a lost lease is never failed by its loser)
    assert_failed_and_moved_on(processor, message_store, fake_redis, keys, env, llm)
    notices = QueuedDeliveries(fake_redis)
    if stage == "delivery enqueue":
        assert len(notices) == 0  # the notice cannot be queued either; the dead letter has the reason
    else:
        assert [n["text"] for n in notices] == [FAILURE_TEXT]
        assert notices[0]["error"] == "the message could not be answered"


def test_an_envelope_the_worker_cannot_load_is_failed_from_its_raw_record_with_a_notice(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    llm: ScriptedLLM,
) -> None:
    """The reproduction of issue 16: a session id over 256 characters, admitted before the edge checked it."""
    bad, after = envelope(session_id="api:" + "u" * 300), envelope(session_id="api:" + "u" * 300, text="next")
    message_store.admit(bad)
    message_store.admit(after)
    run_like_celery(processor, bad)
    record = message_store.get(bad.message_id)
    assert record is not None and record.status == "failed" and record.attempts <= MAX_ATTEMPTS
    assert "session_id" in (record.error or "")  # the operator's reason names the field
    notice = QueuedDeliveries(fake_redis)[0]
    assert notice["text"] == FAILURE_TEXT and notice["reply"]["callback_url"] == "http://127.0.0.1:9/cb"
    assert llm.prompts == []
    run_like_celery(processor, after)  # the next message is not stuck behind it
    assert message_store.get(after.message_id).status == "failed"  # type: ignore[union-attr]


def test_a_record_with_unparseable_json_still_ends(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
) -> None:
    env = envelope()
    message_store.admit(env)
    fake_redis.hset(keys.message(env.message_id), mapping={"envelope": "{not json", "call": "[["})
    run_like_celery(processor, env)
    record = fake_redis.hgetall(keys.message(env.message_id))
    assert record["status"] == "failed" and int(record["attempts"]) <= MAX_ATTEMPTS
    assert len(QueuedDeliveries(fake_redis)) == 0  # no route to the person can be made out
    assert processor.sessions.pending(env.session_id) == 0


def test_an_unreadable_history_item_is_skipped_and_the_message_answered(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
) -> None:
    env = envelope()
    fake_redis.rpush(keys.session_history(env.session_id), "not json", json.dumps({"role": "user"}))
    message_store.admit(env)
    assert run_like_celery(processor, env) == 1
    assert message_store.get(env.message_id).status == "answered"  # type: ignore[union-attr]


def test_a_finished_head_whose_delivery_cannot_be_rebuilt_does_not_block_the_session(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
) -> None:
    done, after = envelope(), envelope(text="after")
    message_store.admit(done)
    message_store.admit(after)
    fake_redis.hset(keys.message(done.message_id), mapping={"status": "answered", "envelope": "{broken"})
    assert run_like_celery(processor, after) == 1
    assert message_store.get(after.message_id).status == "answered"  # type: ignore[union-attr]


def test_the_attempt_count_is_never_stored_past_max_attempts(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
) -> None:
    env = envelope()
    message_store.admit(env)
    lease = processor.sessions.acquire(env.session_id)
    assert lease is not None
    counts = [processor.sessions.begin(lease, env.message_id, MAX_ATTEMPTS)[0] for _ in range(5)]
    assert counts == [1, 2, 3, 4, 4]
    assert fake_redis.hget(keys.message(env.message_id), "attempts") == str(MAX_ATTEMPTS)
