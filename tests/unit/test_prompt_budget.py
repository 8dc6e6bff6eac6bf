"""One prompt budget for every model call: routing (the tool choice) and answering both fit the context.

The reproduction of issue 16: with a helper registered, ``"word " * 3000`` overflowed the model-choice
prompt and the message was dead-lettered; here a 20,000-character message with 3 helpers is answered.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import fakeredis
import pytest

from core_worker.conversation import PER_MESSAGE_OVERHEAD, TRUNCATION_NOTE, PromptTooLarge, build_messages
from core_worker.helper_flow import HelperFlow
from core_worker.llm import ChatMessage
from core_worker.processor import SessionProcessor
from core_worker.sessions import SessionStore, Turn
from redis_stores.deadletters import DeadLetters
from redis_stores.helper_registry import registry_from_settings
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.settings import Settings
from tests.support.factories import CALCULATOR, ScriptedLLM, delivery_task, envelope

MAX_TOKENS = 64


def helper(name: str) -> dict[str, Any]:
    manifest: dict[str, Any] = copy.deepcopy(CALCULATOR)
    manifest["name"] = name
    manifest["capabilities"][0]["reply"] = "model"
    return manifest


def prompt_tokens(llm: ScriptedLLM, messages: Sequence[ChatMessage]) -> int:
    return sum(llm.count_tokens(m.content) + PER_MESSAGE_OVERHEAD for m in messages)


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def processor(
    settings: Settings, fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore, llm: ScriptedLLM
) -> SessionProcessor:
    settings = settings.replace(llm_max_tokens=MAX_TOKENS)
    registry = registry_from_settings(fake_redis, keys, settings)
    for name in ("calculator", "weather", "translator"):
        registry.register(helper(name), "whsec_x")
    sessions = SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=600, status_ttl=600, max_turns=10)
    return SessionProcessor(
        settings=settings, keys=keys, messages=message_store, sessions=sessions, llm=lambda: llm,
        deliver=delivery_task, dead_letters=DeadLetters(fake_redis, keys),
        helpers=HelperFlow(registry, lambda: llm, settings.system_prompt, MAX_TOKENS),
    )


def test_a_20000_character_message_with_3_helpers_is_routed_and_answered_within_the_context(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM
) -> None:
    text = "word " * 4000  # 20,000 characters, 4,000 tokens for this model, whose context holds 2,048
    env = envelope(text=text)
    message_store.admit(env)
    assert processor.run(env.session_id, env.message_id)
    assert message_store.get(env.message_id).status == "answered"  # type: ignore[union-attr]
    assert len(llm.prompts) >= 2  # the tool choice, then the answer
    for prompt in llm.prompts:
        reply_room = max(MAX_TOKENS, 256) if prompt[0].content.count("calculator") else MAX_TOKENS
        assert prompt_tokens(llm, prompt) <= llm.context_length - reply_room
        assert prompt[-1].content.endswith(TRUNCATION_NOTE) or "That was not valid" in prompt[-1].content


def test_history_is_trimmed_before_the_message_and_a_helper_result_is_never_cut() -> None:
    def count(text: str) -> int:
        return len(text.split())

    history = [Turn("user", "old " * 50, "m1"), Turn("assistant", "reply " * 50, "m1")]
    fits = build_messages(system_prompt="sys", history=history, text="short question", count_tokens=count,
                          budget=60, note="[Result of x.y: 42]")
    assert fits.history_ids == [] and fits.messages[-1].content == "short question\n\n[Result of x.y: 42]"
    long = build_messages(system_prompt="sys", history=history, text="w " * 500, count_tokens=count,
                          budget=60, note="[Result of x.y: 42]")
    assert TRUNCATION_NOTE in long.messages[-1].content and long.messages[-1].content.endswith("[Result of x.y: 42]")
    assert sum(count(m.content) + PER_MESSAGE_OVERHEAD for m in long.messages) <= 60
    with pytest.raises(PromptTooLarge):
        build_messages(system_prompt="s " * 100, history=(), text="hi", count_tokens=count, budget=60)
