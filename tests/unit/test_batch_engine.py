"""The batch engine's schedule on the tiny random model, read in engine steps rather than seconds: jobs join
and leave a running batch, long prompts are read in chunks beside running streams, each job samples with
its own grammar, and cancellation, closing and refused grammars end only the jobs they concern.

The brake (tests/support/batch_engine.py) holds the engine's thread inside a sampled token so that a job is
submitted at a known step, whatever the machine's load."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core_worker.llm.base import GenerationError
from core_worker.llm.batch_engine import BatchEngine, Cancelled, run_job
from core_worker.llm.llama_cpp_backend import _quiet_llama_cpp
from tests.support.batch_engine import Brake, job, start_engine
from tests.support.harness import wait_until

SCHEMA = {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]},
                                           "count": {"type": "integer"},
                                           "name": {"type": "string", "maxLength": 8}},
          "required": ["colour", "count", "name"], "additionalProperties": False}


@pytest.fixture(scope="module")
def model(tiny_gguf: Path) -> Iterator[Any]:
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    _quiet_llama_cpp()
    loaded = LlamaModel(path_model=str(tiny_gguf), params=llama_cpp.llama_model_default_params(), verbose=False)
    yield loaded
    loaded.close()


@pytest.fixture
def engine_with_brake(model: Any) -> Iterator[Callable[..., tuple[BatchEngine, Brake]]]:
    started: list[tuple[BatchEngine, Brake]] = []

    def start(**options: Any) -> tuple[BatchEngine, Brake]:
        started.append(start_engine(model, **options))
        return started[-1]

    yield start
    for engine, brake in started:
        brake.release()  # a test that failed while it held the engine
        engine.close()


def tokens(model: Any, text: str) -> list[int]:
    return list(model.tokenize(text.encode("utf-8"), add_bos=True, special=False))


def test_a_short_job_joins_a_running_one_and_its_slot_passes_on_at_once(model: Any, engine_with_brake: Any) -> None:
    engine, brake = engine_with_brake(parallel=2)
    brake.arm()
    long = engine.submit(job(tokens(model, "tell me a long story"), 80))
    with brake.held():  # the long one has its first token
        short = engine.submit(job(tokens(model, "hi"), 3))
        third = engine.submit(job(tokens(model, "and then"), 3))  # no free slot yet: it waits
    for each in (long, short, third):
        assert each._done.wait(30)
    assert long.result is not None and long.result.completion_tokens == 80
    assert short.result is not None and short.result.completion_tokens == 3
    assert third.result is not None and third.result.completion_tokens == 3
    assert long.admitted_step is not None and short.admitted_step is not None and short.ended_step is not None
    assert short.admitted_step > long.admitted_step  # it joined a batch that was running ...
    assert short.ended_step < long.token_steps[-1]  # ... and left it while the long one went on
    assert third.admitted_step == short.ended_step  # the freed slot, taken at the next step
    assert third.ended_step is not None and third.ended_step < long.token_steps[-1]


def test_a_long_prompt_is_read_in_chunks_while_the_running_job_keeps_generating(
    model: Any, engine_with_brake: Any
) -> None:
    engine, brake = engine_with_brake(parallel=2, prefill_chunk=16)
    brake.arm()
    running = engine.submit(job(tokens(model, "go on"), 100))
    prompt = tokens(model, "tell me about the sea and the ships on it " * 22)
    assert 250 < len(prompt) < 400
    with brake.held():
        newcomer = engine.submit(job(prompt, 3))
    for each in (running, newcomer):
        assert each._done.wait(30)
    assert newcomer.result is not None and running.result is not None
    assert newcomer.admitted_step is not None
    first = newcomer.token_steps[0]
    assert first - newcomer.admitted_step == math.ceil(len(prompt) / 16)  # 16 prompt tokens a step
    reading = set(range(newcomer.admitted_step + 1, first + 1))
    assert reading <= set(running.token_steps)  # a token for the running job in every one of those steps


def test_each_job_samples_with_its_own_grammar(model: Any, engine_with_brake: Any) -> None:
    from llama_cpp import LlamaGrammar

    grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)._grammar
    engine, brake = engine_with_brake(parallel=2)
    brake.arm()
    free = engine.submit(job(tokens(model, "say anything"), 60))
    with brake.held():
        constrained = engine.submit(job(tokens(model, "answer in JSON"), 200, grammar=grammar))
    for each in (free, constrained):
        assert each._done.wait(30)
    assert free.result is not None and free.result.completion_tokens == 60
    assert constrained.result is not None and constrained.result.finish_reason == "stop"
    assert constrained.admitted_step is not None and constrained.admitted_step < free.token_steps[-1]  # together
    value = json.loads(constrained.result.text)
    assert set(value) == {"colour", "count", "name"}
    assert value["colour"] in ("red", "green", "blue") and isinstance(value["count"], int)
    assert isinstance(value["name"], str) and len(value["name"]) <= 8
    with pytest.raises(ValueError):
        json.loads(free.result.text)  # the unconstrained one is the random model's gibberish


def test_a_cancelled_job_ends_with_cancelled(model: Any, engine_with_brake: Any) -> None:
    engine, brake = engine_with_brake(parallel=2)
    brake.arm()
    doomed = engine.submit(job(tokens(model, "go on"), 200))
    with brake.held():
        doomed.cancel()
    assert doomed._done.wait(30)
    assert isinstance(doomed.error, Cancelled)
    assert len(doomed.generated) < 200


def test_a_progress_callback_that_raises_cancels_its_job_and_the_engine_serves_the_next(
    model: Any, engine_with_brake: Any
) -> None:
    engine, brake = engine_with_brake(parallel=1)

    class LeaseLost(Exception):
        pass

    def lose_the_lease(text_so_far: Callable[[], str]) -> None:
        brake.release()  # the engine is held on the first token: the job is surely not done
        raise LeaseLost("gone")

    brake.arm()
    lost = job(tokens(model, "go on"), 200)
    with pytest.raises(LeaseLost):
        run_job(engine, lost, on_progress=lose_the_lease, poll=0.05)
    assert lost._done.wait(30)
    assert isinstance(lost.error, Cancelled)
    after = run_job(engine, job(tokens(model, "next please"), 5))
    assert after.completion_tokens == 5


def test_a_conversation_longer_than_its_share_of_the_context_is_refused_at_submit(
    model: Any, engine_with_brake: Any
) -> None:
    engine, _ = engine_with_brake(parallel=2, n_ctx_seq=64)
    prompt = tokens(model, "hello there")
    with pytest.raises(GenerationError, match="exceed the 64"):
        engine.submit(job(prompt, 65 - len(prompt)))
    assert run_job(engine, job(prompt, 64 - len(prompt))).prompt_tokens == len(prompt)  # exactly full is fine


def test_close_fails_running_and_waiting_jobs(model: Any, engine_with_brake: Any) -> None:
    import threading

    engine, brake = engine_with_brake(parallel=1)
    brake.arm()
    running = engine.submit(job(tokens(model, "go on"), 400))
    closing = threading.Thread(target=engine.close)
    with brake.held():
        waiting = engine.submit(job(tokens(model, "me next"), 5))  # the one slot is taken
        closing.start()
        wait_until(lambda: engine._closed, 30, "close() to begin")
    closing.join(30)
    assert not closing.is_alive()
    for each in (running, waiting):
        assert each.done and isinstance(each.error, GenerationError) and "closed" in str(each.error)
    with pytest.raises(GenerationError, match="closed"):
        engine.submit(job(tokens(model, "too late"), 5))


def test_a_returning_conversation_reads_only_its_new_tokens(model: Any, engine_with_brake: Any) -> None:
    engine, _ = engine_with_brake(parallel=2)
    first_a = tokens(model, "conversation A asks about the sea")
    first_b = tokens(model, "conversation B asks about the mountains")
    a1 = job(first_a, 8)
    run_job(engine, a1)
    run_job(engine, job(first_b, 8))  # takes the other slot: A's history stays where it is
    new = tokens(model, "and the ships")[1:]
    second_a = first_a + a1.generated + new
    before = engine.reused_tokens
    result = run_job(engine, job(second_a, 4))
    # the slot holds A's prompt and every reply token but the last sampled (never decoded)
    assert result.reused_tokens == len(first_a) + len(a1.generated) - 1
    assert engine.reused_tokens - before == result.reused_tokens
    assert result.prompt_tokens - result.reused_tokens == len(new) + 1


def test_a_grammar_llama_cpp_refuses_fails_its_job_alone(model: Any, engine_with_brake: Any) -> None:
    engine, brake = engine_with_brake(parallel=2)
    brake.arm()
    fine = engine.submit(job(tokens(model, "go on"), 80))
    with brake.held():
        refused = engine.submit(job(tokens(model, "answer"), 10, grammar="root ::= ("))
    for each in (fine, refused):
        assert each._done.wait(30)
    assert isinstance(refused.error, GenerationError) and "refused the grammar" in str(refused.error)
    assert fine.result is not None and fine.result.completion_tokens == 80
    assert run_job(engine, job(tokens(model, "next"), 5)).completion_tokens == 5  # its slot serves again


def test_another_owners_cache_is_reused_no_further_than_the_public_prefix(model: Any, engine_with_brake: Any) -> None:
    """Mallory sends Alice's exact history as her own prompt: she gets no token of Alice's cache past the shared
    system prompt (so neither Alice's state nor the speed of a correct guess), from a slot or a snapshot."""
    engine, _ = engine_with_brake(parallel=1, snapshot_bytes=64 << 20)
    system = tokens(model, "you are a helpful assistant of the bank")
    alice = system + tokens(model, "my account number is 12345 and my pin is 9876 " * 4)[1:]
    first = job(alice, 4, owner="api:t:alice", public=len(system))
    run_job(engine, first)
    guess = run_job(engine, job(alice + tokens(model, "so")[1:], 4, owner="api:t:mallory", public=len(system)))
    assert guess.reused_tokens <= len(system)  # her own slot now; Alice's state went to a snapshot
    assert engine.snapshots is not None and engine.snapshots.stats.entries == 1
    back = run_job(engine, job(alice + first.generated + tokens(model, "thanks")[1:], 4, owner="api:t:alice",
                               public=len(system)))
    assert back.reused_tokens > len(alice) - 1  # Alice's own snapshot: her whole history, not read again
    # Mallory's state went to a snapshot of its own: identical tokens, but a snapshot never serves, nor
    # supersedes, another owner's.
    assert engine.snapshots.stats.entries == 1 + 1


def test_a_newcomer_on_an_empty_slot_gets_the_system_prompt_from_another_sequence(
    model: Any, engine_with_brake: Any
) -> None:
    """The shared system prompt is copied from the sequence that holds it instead of read again, and the
    newcomer's answer is exactly what it is with everything read (greedy)."""
    engine, _ = engine_with_brake(parallel=2)
    system = tokens(model, "you are a helpful assistant who answers briefly and kindly " * 3)
    first = system + tokens(model, "alice asks about the sea and the ships " * 20)[1:]  # worth keeping in its slot
    run_job(engine, job(first, 4, owner="alice", public=len(system)))
    second = system + tokens(model, "bob asks about mountains")[1:]
    shared = run_job(engine, job(second, 12, owner="bob", public=len(system)))
    assert engine.shared_tokens == len(system) and shared.reused_tokens == len(system)
    fresh, _ = engine_with_brake(parallel=1)
    alone = run_job(fresh, job(second, 12, owner="bob", public=len(system)))
    assert alone.reused_tokens == 0 and shared.text == alone.text
