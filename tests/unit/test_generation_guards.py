"""What guards a generation under way: a lost lease cancels it, and an attempt after a failed one runs alone.

The model double streams (it calls its progress callback after every "token", as the real backends do) and
records what it saw, so the tests read the processor's behaviour off the model's side of the call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import fakeredis
import pytest

from core_worker.llm import ChatMessage, Completion
from core_worker.llm.base import Progress
from core_worker.llm.model_process import runs_alone
from core_worker.processor import SessionProcessor
from core_worker.sessions import LeaseLost, SessionStore
from redis_stores.deadletters import DeadLetters
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.settings import Settings
from tests.support.factories import delivery_task, envelope


class StreamingLLM:
    """Streams a reply token by token for up to ``seconds``; fails its first ``failures`` calls."""

    name = "streaming"
    context_length = 2048
    constrains_json = False
    streams = True

    def __init__(self, *, seconds: float = 0.0, failures: int = 0, during: Any = None) -> None:
        self.seconds, self.failures, self.during = seconds, failures, during
        self.alone: list[bool] = []
        self.stopped_by: list[BaseException] = []
        self.tokens = 0

    def chat(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
             json_schema: dict[str, Any] | None = None, on_progress: Progress | None = None) -> Completion:
        self.alone.append(runs_alone())
        if len(self.alone) <= self.failures:
            raise RuntimeError("the model failed")
        deadline = time.monotonic() + self.seconds
        try:
            while time.monotonic() < deadline:
                self.tokens += 1
                if self.during is not None and self.tokens == 1:
                    self.during()
                if on_progress is not None:
                    on_progress(lambda: "word " * self.tokens)
                time.sleep(0.01)
        except BaseException as exc:
            self.stopped_by.append(exc)
            raise
        return Completion(f"echo: {messages[-1].content}", 10, self.tokens, "stop")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def _processor(settings: Settings, redis: fakeredis.FakeRedis, keys: Keys, messages: MessageStore,
               llm: StreamingLLM) -> SessionProcessor:
    sessions = SessionStore(redis, keys, lease_seconds=1, session_ttl=600, status_ttl=600, max_turns=10)
    return SessionProcessor(
        settings=settings.replace(session_lock_seconds=1, max_attempts=3), keys=keys, messages=messages,
        sessions=sessions, llm=lambda: llm, deliver=delivery_task, dead_letters=DeadLetters(redis, keys),
    )


def test_a_lost_lease_cancels_the_generation_under_way(
    settings: Settings, fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore
) -> None:
    env = envelope("api:ann", "hello")
    message_store.admit(env)
    # Another worker takes the session over while the model writes: the lock now holds its token.
    llm = StreamingLLM(seconds=10, during=lambda: fake_redis.set(keys.session_lock(env.session_id), "999|other"))
    processor = _processor(settings, fake_redis, keys, message_store, llm)
    with pytest.raises(LeaseLost):
        processor.run(env.session_id, env.message_id)
    assert len(llm.stopped_by) == 1 and isinstance(llm.stopped_by[0], LeaseLost)  # the model was stopped ...
    assert llm.tokens < 500  # ... long before its 10 s (1,000 tokens) were written
    record = message_store.get(env.message_id)
    assert record is not None and record.status != "answered"


def test_an_attempt_after_a_failed_one_is_generated_alone(
    settings: Settings, fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore
) -> None:
    env = envelope("api:bob", "hello")
    message_store.admit(env)
    llm = StreamingLLM(failures=1)
    processor = _processor(settings, fake_redis, keys, message_store, llm)
    with pytest.raises(RuntimeError):
        processor.run(env.session_id, env.message_id)
    assert processor.run(env.session_id, env.message_id)
    assert llm.alone == [False, True]  # the first attempt shared the model; the one after its failure did not
    record = message_store.get(env.message_id)
    assert record is not None and record.status == "answered"
