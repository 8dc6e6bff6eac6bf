from __future__ import annotations

import json
import time
from typing import Any

import fakeredis
import pytest

from core_worker.helper_flow import HelperFlow, unavailable_text
from core_worker.helper_limits import HelperCallLimit
from core_worker.processor import FAILURE_TEXT, SessionProcessor
from core_worker.sessions import SessionStore
from redis_stores.deadletters import DeadLetters
from redis_stores.helper_registry import registry_from_settings
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.schemas import Attachment
from tasks.settings import Settings
from tests.support.factories import CALCULATOR, QueuedDeliveries, ScriptedLLM, delivery_task, envelope


@pytest.fixture
def llm() -> ScriptedLLM:
    return ScriptedLLM()


@pytest.fixture
def delivered(fake_redis: fakeredis.FakeRedis) -> QueuedDeliveries:
    return QueuedDeliveries(fake_redis)


@pytest.fixture
def processor(
    settings: Settings, fake_redis: fakeredis.FakeRedis, keys: Keys, message_store: MessageStore,
    llm: ScriptedLLM, delivered: QueuedDeliveries,
) -> SessionProcessor:
    sessions = SessionStore(fake_redis, keys, lease_seconds=30, session_ttl=600, status_ttl=600, max_turns=10)
    return SessionProcessor(
        settings=settings.replace(max_attempts=2), keys=keys, messages=message_store, sessions=sessions,
        llm=lambda: llm, deliver=delivery_task, dead_letters=DeadLetters(fake_redis, keys),
    )


def test_a_session_is_drained_in_order_with_history(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM, delivered: QueuedDeliveries
) -> None:
    first, second = envelope(text="one"), envelope(text="two")
    message_store.admit(first)
    message_store.admit(second)
    assert processor.run(first.session_id, second.message_id) is True
    assert [d["message_id"] for d in delivered] == [first.message_id, second.message_id]
    assert [m.content for m in llm.prompts[1]][1:] == ["one", "echo: one", "two"]
    record = message_store.get(second.message_id)
    assert record is not None and record.reply is not None
    assert record.reply["context_message_ids"] == [first.message_id]


def test_a_task_whose_message_is_already_done_does_nothing(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM
) -> None:
    env = envelope()
    message_store.admit(env)
    assert processor.run(env.session_id, env.message_id)
    assert processor.run(env.session_id, env.message_id)  # a redelivered task
    assert len(llm.prompts) == 1


def test_a_task_waits_while_another_worker_holds_the_session(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM
) -> None:
    env = envelope()
    message_store.admit(env)
    lease = processor.sessions.acquire(env.session_id)
    assert lease is not None
    assert processor.run(env.session_id, env.message_id) is False
    assert llm.prompts == []


def test_a_message_that_keeps_failing_is_dead_lettered_and_the_session_moves_on(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM,
    delivered: QueuedDeliveries, fake_redis: fakeredis.FakeRedis, keys: Keys,
) -> None:
    poison, after = envelope(text="boom"), envelope(text="fine")
    llm.fail_on.add("boom")
    message_store.admit(poison)
    message_store.admit(after)
    with pytest.raises(RuntimeError):
        processor.run(poison.session_id, poison.message_id)  # attempt 1: the task retries
    assert processor.run(poison.session_id, after.message_id)  # attempt 2 = MAX_ATTEMPTS: failed
    record = message_store.get(poison.message_id)
    assert record is not None and record.status == "failed" and "model exploded" in (record.error or "")
    assert delivered[0]["status"] == "failed" and delivered[0]["text"] == FAILURE_TEXT
    assert message_store.get(after.message_id).status == "answered"  # type: ignore[union-attr]
    assert DeadLetters(fake_redis, keys).recent()[0]["kind"] == "poison"


def test_a_finished_message_still_at_the_head_is_only_delivered_again(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM, delivered: QueuedDeliveries,
    fake_redis: fakeredis.FakeRedis,
) -> None:
    env = envelope()
    message_store.admit(env)
    lease = processor.sessions.acquire(env.session_id)
    assert lease is not None
    # An answer recorded but still at the head (a replay, or a version that popped in a second step).
    fake_redis.hset(processor.keys.message(env.message_id),
                    mapping={"status": "answered", "reply": '{"text": "saved"}'})
    processor.sessions.release(lease)
    assert processor.run(env.session_id, env.message_id)
    assert llm.prompts == []
    assert [d["text"] for d in delivered] == ["saved"]


def test_a_crash_counted_past_the_limit_fails_the_message_without_running_it(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM,
    fake_redis: fakeredis.FakeRedis, keys: Keys,
) -> None:
    env = envelope()
    message_store.admit(env)
    fake_redis.hset(keys.message(env.message_id), "attempts", 2)  # two workers died on it
    assert processor.run(env.session_id, env.message_id)
    assert llm.prompts == []
    assert message_store.get(env.message_id).status == "failed"  # type: ignore[union-attr]


@pytest.fixture
def with_helpers(
    processor: SessionProcessor, fake_redis: fakeredis.FakeRedis, keys: Keys, llm: ScriptedLLM, settings: Settings
) -> list[tuple[str, str, dict[str, Any]]]:
    registry = registry_from_settings(fake_redis, keys, settings)
    registry.register(CALCULATOR, "whsec_x")
    calls: list[tuple[str, str, dict[str, Any]]] = []
    processor.helpers = HelperFlow(registry, lambda: llm, "be brief", 64)
    processor.call_helper = lambda mid, sid, call: calls.append((mid, sid, call))
    return calls


def test_a_helper_call_parks_the_session_until_its_result_arrives(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM,
    delivered: QueuedDeliveries, with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    ask, after = envelope(text="/calculate 6*7"), envelope(text="thanks")
    message_store.admit(ask)
    message_store.admit(after)
    assert processor.run(ask.session_id, after.message_id) is False  # parked: "thanks" waits behind it
    [(mid, _, call)] = with_helpers
    assert (mid, call["helper"], call["arguments"], call["via"]) == (ask.message_id, "calculator",
                                                                    {"expression": "6*7"}, "explicit")
    assert llm.prompts == [] and delivered == []

    message_store.complete_call(ask.message_id, call["call_id"], {"output": {"text": "42"}, "error": None,
                                                                 "duration_ms": 3})
    assert processor.run(ask.session_id, after.message_id) is True
    assert [d["text"] for d in delivered] == ["42", "echo: thanks"]
    history = processor.sessions.history(ask.session_id)
    assert [t.role for t in history] == ["user", "tool", "assistant", "user", "assistant"]
    assert json.loads(history[1].content)["output"] == {"text": "42"}
    assert "Result of calculator.calculate" in llm.prompts[-1][1].content  # the model saw it afterwards


def test_a_helper_that_never_answers_gets_a_graceful_reply_after_its_deadline(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    delivered: QueuedDeliveries, with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    ask = envelope(text="/calculate 1+1")
    message_store.admit(ask)
    processor.run(ask.session_id, ask.message_id)
    [(_, _, call)] = with_helpers
    fake_redis.hset(keys.message(ask.message_id), "call", json.dumps({**call, "deadline": 0}))
    assert processor.run(ask.session_id, ask.message_id) is True
    assert delivered[0]["text"] == unavailable_text("calculator")


def test_a_mistyped_command_is_answered_with_the_available_commands(
    processor: SessionProcessor, message_store: MessageStore, delivered: QueuedDeliveries,
    with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    ask = envelope(text="/calc 2+2")  # near /calculate: a helper call gone wrong, not text for the model
    message_store.admit(ask)
    assert processor.run(ask.session_id, ask.message_id)
    assert "/calculator.calculate" in delivered[0]["text"] and with_helpers == []


def test_a_slash_word_that_names_no_helper_is_answered_by_the_model(
    processor: SessionProcessor, message_store: MessageStore, delivered: QueuedDeliveries,
    with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    """Issue 24: with any helper registered, "/weather Paris" was "I don't know a command called 'weather'"."""
    ask = envelope(text="/weather Paris")
    message_store.admit(ask)
    assert processor.run(ask.session_id, ask.message_id)
    assert delivered[0]["text"] == "echo: /weather Paris" and with_helpers == []


def test_a_parked_message_is_looked_at_again_only_at_its_deadline(
    processor: SessionProcessor, message_store: MessageStore, with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    ask = envelope(text="/calculate 1+1")
    message_store.admit(ask)
    processor.run(ask.session_id, ask.message_id)
    assert processor.retry_delay(ask.session_id, ask.message_id) > 1.0  # deadline is seconds away


def test_a_refused_input_is_answered_in_the_helpers_own_words_without_the_model(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM, delivered: QueuedDeliveries,
    with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    ask = envelope(text="/calculate 1/0")
    message_store.admit(ask)
    processor.run(ask.session_id, ask.message_id)
    [(_, _, call)] = with_helpers
    message_store.complete_call(ask.message_id, call["call_id"], {"output": None, "error": "division by zero",
                                                                 "outcome": "refused", "duration_ms": 2})
    assert processor.run(ask.session_id, ask.message_id) is True
    assert delivered[0]["text"] == "The calculator couldn't do that: division by zero."
    assert llm.prompts == []


def test_a_refusal_from_a_model_reply_capability_is_told_to_the_model(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM, delivered: QueuedDeliveries,
    with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    assert processor.helpers is not None
    manifest = json.loads(json.dumps(CALCULATOR))
    manifest.update(name="converter", url="http://127.0.0.1:8101")
    manifest["capabilities"][0].update(name="convert", reply="model")
    processor.helpers.registry.register(manifest, "whsec_y")
    ask = envelope(text="/convert 5 km to kg")
    message_store.admit(ask)
    processor.run(ask.session_id, ask.message_id)
    [(_, _, call)] = with_helpers
    message_store.complete_call(ask.message_id, call["call_id"], {
        "output": None, "error": "cannot convert length (km) to mass (kg)", "outcome": "refused", "duration_ms": 2})
    assert processor.run(ask.session_id, ask.message_id) is True
    told = llm.prompts[-1][-1].content
    assert "converter.convert could not do this: cannot convert length (km) to mass (kg)" in told
    assert delivered[0]["text"] == f"echo: {told}" and "unavailable" not in told


def test_a_sender_past_the_helper_call_limit_is_told_to_slow_down_and_no_call_is_made(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, settings: Settings,
    delivered: QueuedDeliveries, with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    assert processor.helpers is not None
    processor.helpers.limit = HelperCallLimit(settings.replace(rate_limit_helper_calls="1/hour"), fake_redis)
    first = envelope(text="/calculate 1+1")
    again = envelope(session_id="api:alice:other", text="/calculate 2+2")  # the same sender in another session
    other = envelope(session_id="api:bob", sender="bob", text="/calculate 3+3")
    for env in (first, again, other):
        message_store.admit(env)
        processor.run(env.session_id, env.message_id)
    assert [mid for mid, _, _ in with_helpers] == [first.message_id, other.message_id]
    assert [d["message_id"] for d in delivered] == [again.message_id]
    assert delivered[0]["text"].startswith("You are asking my helpers too often. Please slow down and try again in")


def test_a_half_open_circuit_lets_the_call_through_to_claim_its_one_trial_itself(
    processor: SessionProcessor, message_store: MessageStore, fake_redis: fakeredis.FakeRedis, keys: Keys,
    delivered: QueuedDeliveries, with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    assert processor.helpers is not None
    registry = processor.helpers.registry
    for _ in range(registry.failure_threshold):
        registry.record_failure("calculator", "HTTP 500")
    refused = envelope(text="/calculate 1+1")
    message_store.admit(refused)
    assert processor.run(refused.session_id, refused.message_id) is True  # open: answered at once, no call
    assert delivered[0]["text"] == unavailable_text("calculator") and with_helpers == []

    fake_redis.hset(keys.helper_health("calculator"), "opened_at", repr(time.time() - registry.reset_seconds - 1))
    trial = envelope(session_id="api:bob", sender="bob", text="/calculate 2+2")
    message_store.admit(trial)
    processor.run(trial.session_id, trial.message_id)
    [(_, _, call)] = with_helpers  # parked: the core only peeked at the circuit
    assert registry.allow_call("calculator", call["call_id"])  # so the call task still gets the trial


def test_redeliver_queues_the_delivery_of_a_finished_message_again(
    processor: SessionProcessor, message_store: MessageStore, delivered: QueuedDeliveries
) -> None:
    env = envelope()
    message_store.admit(env)
    assert processor.run(env.session_id, env.message_id)
    record = message_store.get(env.message_id)
    assert record is not None and len(delivered) == 1
    processor.redeliver(record)  # the sweeper, for an outbox head whose task was lost
    assert [d["message_id"] for d in delivered] == [env.message_id, env.message_id]
    assert delivered[1]["text"] == delivered[0]["text"]


def _second_helper(processor: SessionProcessor, name: str, capability: dict[str, Any]) -> None:
    assert processor.helpers is not None
    manifest = json.loads(json.dumps(CALCULATOR))
    manifest.update(name=name, url="http://127.0.0.1:8102")
    manifest["capabilities"][0].update(capability)
    processor.helpers.registry.register(manifest, "whsec_z")


def test_a_command_two_helpers_claim_reaches_neither_and_the_person_is_told_the_qualified_names(
    processor: SessionProcessor, message_store: MessageStore, llm: ScriptedLLM, delivered: QueuedDeliveries,
    with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    # Issue 17: a helper declaring the calculator's capability captured `/calculate 1234 * 5678`.
    _second_helper(processor, "evil", {})
    ask = envelope(text="/calculate 1234 * 5678")
    message_store.admit(ask)
    assert processor.run(ask.session_id, ask.message_id) is True
    assert with_helpers == [] and llm.prompts == []  # no call to either helper, nothing to the model
    text = delivered[0]["text"]
    assert "More than one helper answers to /calculate" in text
    assert "/calculator.calculate" in text and "/evil.calculate" in text
    qualified = envelope(text="/calculator.calculate 1234 * 5678")
    message_store.admit(qualified)
    processor.run(qualified.session_id, qualified.message_id)
    [(_, _, call)] = with_helpers
    assert (call["helper"], call["arguments"]) == ("calculator", {"expression": "1234 * 5678"})


def test_an_attachment_two_helpers_accept_goes_to_neither_until_a_command_names_one(
    processor: SessionProcessor, message_store: MessageStore, delivered: QueuedDeliveries,
    with_helpers: list[tuple[str, str, dict[str, Any]]],
) -> None:
    reader = {"name": "read", "accepts": ["image/png"],
              "input_schema": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}}
    _second_helper(processor, "ocr", reader)
    _second_helper(processor, "grabber", reader)
    photo = Attachment("image/png", 10, "a.png", "http://127.0.0.1:9/a.png")
    ask = envelope(text="what does this say?", attachments=(photo,))
    message_store.admit(ask)
    processor.run(ask.session_id, ask.message_id)
    assert with_helpers == []
    assert "files of type image/png" in delivered[0]["text"] and "/grabber.read" in delivered[0]["text"]
    named = envelope(text="/ocr.read", attachments=(photo,))
    message_store.admit(named)
    processor.run(named.session_id, named.message_id)
    [(_, _, call)] = with_helpers
    assert (call["helper"], call["arguments"]) == ("ocr", {"url": "http://127.0.0.1:9/a.png"})
