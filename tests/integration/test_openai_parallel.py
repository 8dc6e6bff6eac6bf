"""The openai backend with LLM_PARALLEL conversations: four threads chat at once through one backend to llama.cpp's
own server (xllamacpp, 4 slots, continuous batching), behind a proxy that counts the chats open at the same time.
The proxy holds each chat until as many as expected are open, so no assertion depends on timing."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from core_worker.llm import BackendConfig, ChatMessage, Completion, load_backend
from core_worker.llm.openai_backend import OpenAIBackend
from tests.support.counting_proxy import CountingProxy
from tests.support.llm_fixtures import BATCHING_SLOTS

pytestmark = pytest.mark.integration

QUESTIONS = ["What is the capital of France?", "Name three colours.", "Write one sentence about the sea.",
             "What do cats like to eat?"]


@pytest.fixture
def counting_proxy(request: pytest.FixtureRequest, batching_server: str) -> Iterator[CountingProxy]:
    """A proxy before the batching server that holds each chat until ``request.param`` are open at once."""
    proxy = CountingProxy(batching_server, hold_until=request.param)
    yield proxy
    proxy.stop()


def _backend(proxy: CountingProxy, parallel: int) -> OpenAIBackend:
    backend = load_backend(BackendConfig(backend="openai", model_path=None, openai_base_url=f"{proxy.url}/v1",
                                         n_ctx=1024, max_tokens=48, temperature=0.0, request_timeout=120.0,
                                         parallel=parallel))
    assert isinstance(backend, OpenAIBackend)
    return backend


def _chat_from_four_threads(backend: OpenAIBackend) -> list[tuple[int, Completion, list[str]]]:
    """Each thread counts its question's tokens, then chats; the odd ones stream. They start together (a barrier)."""
    start = threading.Barrier(len(QUESTIONS))

    def one(question: str, streaming: bool) -> tuple[int, Completion, list[str]]:
        shown: list[str] = []
        start.wait()
        tokens = backend.count_tokens(question)
        messages = [ChatMessage("system", "Answer briefly."), ChatMessage("user", question)]
        if streaming:
            reply = backend.chat(messages, on_progress=lambda text: shown.append(text()))
        else:
            reply = backend.chat(messages)
        return tokens, reply, shown

    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        futures = [pool.submit(one, question, i % 2 == 1) for i, question in enumerate(QUESTIONS)]
        return [future.result() for future in futures]


def _assert_real_answers(results: list[tuple[int, Completion, list[str]]]) -> None:
    for i, (tokens, reply, shown) in enumerate(results):
        assert tokens > 0
        assert re.search(r"[A-Za-z]{3,}", reply.text), reply
        assert reply.prompt_tokens > 0 and 0 < reply.completion_tokens <= 48
        assert reply.finish_reason in ("stop", "length")
        if i % 2 == 1:  # streamed: the text grew towards the reply
            assert shown and all(reply.text.startswith(s.strip()) for s in shown)


def test_the_server_batches_four_slots(batching_server: str) -> None:
    assert requests.get(f"{batching_server}/props", timeout=10).json()["total_slots"] == BATCHING_SLOTS


@pytest.mark.parametrize("counting_proxy", [4], indirect=True)
def test_four_parallel_chats_are_all_in_flight_at_once(counting_proxy: CountingProxy) -> None:
    backend = _backend(counting_proxy, parallel=4)
    try:
        results = _chat_from_four_threads(backend)
    finally:
        backend.close()
    assert (counting_proxy.max_open, counting_proxy.requests) == (4, 4)
    _assert_real_answers(results)
    assert backend._tokenizer == "/tokenize"  # llama.cpp's exact count, found by threads probing at once


@pytest.mark.parametrize("counting_proxy", [1], indirect=True)
def test_parallel_one_sends_one_chat_at_a_time(counting_proxy: CountingProxy) -> None:
    backend = _backend(counting_proxy, parallel=1)
    try:
        results = _chat_from_four_threads(backend)
    finally:
        backend.close()
    assert (counting_proxy.max_open, counting_proxy.requests) == (1, 4)
    _assert_real_answers(results)
