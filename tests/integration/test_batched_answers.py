"""Batching changes no answer: SmolLM2 at temperature 0 gives four questions asked at once through one
``LlamaCppBackend(parallel=4)`` exactly the replies each gets asked alone through a ``parallel=1`` backend,
whether they arrive together or join a running batch with their prompts read a few tokens per step.

Each sequence has its own cells and its own sampler in the engine (core_worker/llm/batch_engine.py), so a
conversation's logits must not depend on who shares its decode; a crossed position, sequence id or sampler
shows up here as different text."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from core_worker.llm.base import BackendConfig, ChatMessage, Completion, Progress
from core_worker.llm.llama_cpp_backend import LlamaCppBackend

pytestmark = [pytest.mark.integration, pytest.mark.model]

QUESTIONS = [
    "Give me three tips for sleeping better.",  # the longest answer first: the others join while it runs
    "What is the capital of France? Answer in one sentence.",
    "Write a short poem about the sea.",
    "Explain what a CPU does, briefly.",
]
MAX_TOKENS = 96


def _backend(model: Path, parallel: int, prefill_chunk: int = 64) -> LlamaCppBackend:
    return LlamaCppBackend(BackendConfig(backend="llama_cpp", model_path=str(model), n_ctx=1024, n_threads=2,
                                         max_tokens=MAX_TOKENS, temperature=0.0, seed=7, parallel=parallel,
                                         prefill_chunk=prefill_chunk))


def _ask(backend: LlamaCppBackend, question: str, on_progress: Progress | None = None) -> Completion:
    return backend.chat([ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", question)],
                        on_progress=on_progress)


@pytest.fixture(scope="module")
def alone(smollm2_gguf: Path) -> tuple[list[Completion], int]:
    """Each question asked alone, one after the other; and the engine steps that took."""
    backend = _backend(smollm2_gguf, 1)
    try:
        answers = [_ask(backend, q) for q in QUESTIONS]
        assert backend._engine is not None
        return answers, backend._engine.steps
    finally:
        backend.close()


def test_four_questions_asked_at_once_get_the_answers_each_gets_alone(
    smollm2_gguf: Path, alone: tuple[list[Completion], int]
) -> None:
    expected, alone_steps = alone
    backend = _backend(smollm2_gguf, 4)
    try:
        with ThreadPoolExecutor(len(QUESTIONS)) as pool:
            together = list(pool.map(lambda q: _ask(backend, q), QUESTIONS))
        assert backend._engine is not None
        batched_steps = backend._engine.steps
    finally:
        backend.close()
    assert [c.text for c in together] == [c.text for c in expected]
    assert together == expected  # token counts and finish reasons too
    assert len({c.text for c in expected}) == len(QUESTIONS) and all(c.text for c in expected)
    assert batched_steps < alone_steps  # they did share decodes


def test_questions_joining_a_running_batch_in_chunks_get_the_answers_each_gets_alone(
    smollm2_gguf: Path, alone: tuple[list[Completion], int]
) -> None:
    expected, _ = alone
    backend = _backend(smollm2_gguf, 4, prefill_chunk=8)  # each newcomer's prompt over several steps
    first_token = threading.Event()

    def started(text_so_far: Callable[[], str]) -> None:
        first_token.set()

    try:
        with ThreadPoolExecutor(len(QUESTIONS)) as pool:
            first = pool.submit(_ask, backend, QUESTIONS[0], started)
            assert first_token.wait(60)  # it generates (95 tokens to go) while the others' prompts are read
            rest = [pool.submit(_ask, backend, q) for q in QUESTIONS[1:]]
            joined = [first.result()] + [f.result() for f in rest]
    finally:
        backend.close()
    assert joined == expected
