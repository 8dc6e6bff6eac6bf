"""Real libraries on a generated tiny model: llama_cpp, ctransformers, and the openai
backend against a real ``llama_cpp.server`` child process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core_worker.chat_template import load_chat_template
from core_worker.llm import BackendConfig, ChatMessage, GenerationError, LLMBackend, load_backend
from core_worker.llm.openai_backend import OpenAIBackend
from tests.support import llm_fixtures
from tests.support.llm_fixtures import LlamaServer

pytestmark = pytest.mark.integration

LOCAL_BACKENDS = ("llama_cpp", "ctransformers")
MESSAGES = [
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Hello there, what is the weather today?"),
    ChatMessage("assistant", "Sunny."),
    ChatMessage("user", "And tomorrow?"),
]


def _config(backend: str, model: Path, **changes: Any) -> BackendConfig:
    return BackendConfig(backend=backend, model_path=str(model), n_ctx=4096, n_threads=1, max_tokens=24,
                         seed=42, **changes)


@pytest.fixture(scope="module", params=LOCAL_BACKENDS)
def local_backend(request: pytest.FixtureRequest, tiny_gguf: Path) -> Iterator[Any]:
    backend = load_backend(_config(request.param, tiny_gguf))
    yield backend
    backend.close()


def test_chat_produces_a_completion(local_backend: Any) -> None:
    assert isinstance(local_backend, LLMBackend)
    result = local_backend.chat(MESSAGES)
    assert result.text.strip()
    assert result.prompt_tokens > 0 and 0 < result.completion_tokens <= 24
    assert result.finish_reason in ("stop", "length")
    assert local_backend.count_tokens("Hello there, what is the weather today?") > 0
    assert local_backend.count_tokens("") == 0


def test_context_is_capped_at_the_trained_length(local_backend: Any) -> None:
    assert local_backend.context_length == 2048  # asked for 4096, the file says 2048


def test_max_tokens_and_length_finish(local_backend: Any) -> None:
    result = local_backend.chat(MESSAGES, max_tokens=5)
    assert result.completion_tokens <= 5
    if result.completion_tokens == 5:
        assert result.finish_reason == "length"


def test_caller_stop_string_cuts_the_reply(local_backend: Any) -> None:
    # Random weights emit invented words full of vowels: an "e" comes up within 64 tokens.
    result = local_backend.chat(MESSAGES, max_tokens=64, stop=["e"])
    assert "e" not in result.text
    assert result.finish_reason == "stop"


def test_same_seed_same_reply(local_backend: Any) -> None:
    assert local_backend.chat(MESSAGES).text == local_backend.chat(MESSAGES).text


def test_progress_reports_growing_text_and_changes_nothing_in_the_reply(local_backend: Any) -> None:
    plain = local_backend.chat(MESSAGES, max_tokens=48)
    seen: list[str] = []
    streamed = local_backend.chat(MESSAGES, max_tokens=48, on_progress=lambda text: seen.append(text()))
    assert streamed == plain  # same text, same token accounting, same finish
    assert len(seen) >= min(plain.completion_tokens, 48) - 2  # offered after (about) every token
    assert all(plain.text.startswith(t.strip()) for t in seen if t.strip())
    assert any(t.strip() for t in seen)


def test_prompt_longer_than_context_is_a_generation_error(local_backend: Any) -> None:
    huge = [ChatMessage("user", "weather today " * 3000)]
    with pytest.raises(GenerationError, match="context"):
        local_backend.chat(huge)


def test_both_backends_see_the_same_prompt(tiny_gguf: Path) -> None:
    backends = [load_backend(_config(name, tiny_gguf)) for name in LOCAL_BACKENDS]
    try:
        prompts = [b.render_prompt(MESSAGES) for b in backends]  # type: ignore[attr-defined]
        assert prompts[0] == prompts[1] == load_chat_template(tiny_gguf).render(MESSAGES)
        assert prompts[0].endswith("<|assistant|>\n")
        # The template's special-token text (</s>) becomes the EOS id in both, so the ids match too.
        ids = [b.tokenize_messages(MESSAGES) for b in backends]  # type: ignore[attr-defined]
        assert ids[0] == ids[1]
        assert ids[0][0] == 1 and ids[0].count(1) == 1  # one BOS
        assert ids[0].count(2) == len(MESSAGES)  # one EOS closing each message
        text = "Plain text, with numbers 12345 and unicode: héllo"
        assert backends[0].count_tokens(text) == backends[1].count_tokens(text)
    finally:
        for b in backends:
            b.close()


@pytest.mark.parametrize("name", LOCAL_BACKENDS)
def test_closed_backend_refuses_work(tiny_gguf: Path, name: str) -> None:
    backend = load_backend(_config(name, tiny_gguf))
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(GenerationError, match="closed"):
        backend.chat(MESSAGES)


def test_openai_backend_against_real_server(llama_server: LlamaServer) -> None:
    backend = load_backend(BackendConfig(backend="openai", model_path=None, openai_base_url=llama_server.base_url,
                                         n_ctx=2048, max_tokens=16, request_timeout=60.0))
    try:
        assert isinstance(backend, OpenAIBackend) and backend.context_length == 2048
        result = backend.chat(MESSAGES)
        assert result.text
        assert result.prompt_tokens > 0 and 0 < result.completion_tokens <= 16
        assert result.finish_reason in ("stop", "length")
        # llama-cpp-python's server has an exact tokenize endpoint; no len/4 estimate.
        assert backend.count_tokens("Hello there") > 0
        assert backend._tokenizer == "/extras/tokenize/count"
    finally:
        backend.close()


def test_openai_streaming_gives_the_same_text_as_a_plain_request(llama_server: LlamaServer) -> None:
    backend = load_backend(BackendConfig(backend="openai", model_path=None, openai_base_url=llama_server.base_url,
                                         n_ctx=2048, max_tokens=16, seed=7, request_timeout=60.0))
    try:
        plain = backend.chat(MESSAGES)
        seen: list[str] = []
        streamed = backend.chat(MESSAGES, on_progress=lambda text: seen.append(text()))  # type: ignore[call-arg]
        assert streamed.text == plain.text and streamed.finish_reason == plain.finish_reason
        # llama-cpp-python's server sends no usage in a stream: one token per content event.
        assert 0 < streamed.completion_tokens <= 16
        assert seen and all(plain.text.startswith(t.strip()) for t in seen)
    finally:
        backend.close()


def test_openai_http_errors_become_generation_errors(llama_server: LlamaServer) -> None:
    wrong = llama_server.base_url.replace("/v1", "/nope")
    backend = load_backend(BackendConfig(backend="openai", model_path=None, openai_base_url=wrong))
    with pytest.raises(GenerationError, match="HTTP 404"):
        backend.chat(MESSAGES)
    backend.close()


def test_custom_factory_backend() -> None:
    spec = f"{llm_fixtures.__name__}:make_echo_backend"
    backend = load_backend(BackendConfig(backend=spec, model_path=None, n_ctx=512, max_tokens=3))
    assert isinstance(backend, llm_fixtures.WordEchoBackend)
    result = backend.chat([ChatMessage("user", "one two three four")])
    assert (result.text, result.finish_reason, backend.context_length) == ("one two three", "length", 512)


def test_a_real_chatml_model_ends_its_reply_at_its_end_of_turn(smollm2_gguf: Path) -> None:
    """SmolLM2-135M-Instruct (the offline fallback): the GGUF's own ChatML template, stopping at ``<|im_end|>``/EOS,
    so a short answer ends where the model ends it, streamed or not, and never runs on to ``max_tokens``."""
    backend = load_backend(BackendConfig(backend="llama_cpp", model_path=str(smollm2_gguf), n_ctx=2048, n_threads=1,
                                         max_tokens=200, temperature=0.0))
    try:
        assert (backend.template.origin, backend.template.family) == ("gguf", "chatml")  # type: ignore[attr-defined]
        assert "<|im_end|>" in backend.template.stop  # type: ignore[attr-defined]
        question = [ChatMessage("system", "Answer briefly."), ChatMessage("user", "What is the capital of France?")]
        plain = backend.chat(question)
        assert "Paris" in plain.text and plain.finish_reason == "stop" and plain.completion_tokens < 50
        assert not any(marker in plain.text for marker in ("<|im_end|>", "<|im_start|>", "<|endoftext|>"))
        shown: list[str] = []
        streamed = backend.chat(question, on_progress=lambda text: shown.append(text()))  # type: ignore[call-arg]
        assert streamed == plain and shown and all(plain.text.startswith(s.strip()) for s in shown)
    finally:
        backend.close()
