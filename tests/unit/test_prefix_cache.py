"""The llama.cpp prefix reuse: a conversation finds its history in its slot or in a snapshot, and a restored
snapshot gives the same answer as a live context."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core_worker.llm.base import BackendConfig, ChatMessage
from core_worker.llm.llama_cpp_backend import LlamaCppBackend
from core_worker.llm.prefix_cache import common_prefix
from core_worker.tiny_model import write_tiny_model


def test_common_prefix() -> None:
    a = np.array([1, 2, 3, 4], dtype=np.intc)
    assert common_prefix(a, np.array([1, 2, 9], dtype=np.intc)) == 2
    assert common_prefix(a, a[:2]) == 2
    assert common_prefix(a, np.array([7], dtype=np.intc)) == 0
    assert common_prefix(a, np.array([], dtype=np.intc)) == 0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny.gguf")


def _backend(model: Path, cache_mb: int, parallel: int = 1) -> LlamaCppBackend:
    return LlamaCppBackend(BackendConfig(backend="llama_cpp", model_path=str(model), n_ctx=1024, n_threads=1,
                                         max_tokens=12, seed=3, temperature=0.0, prompt_cache_bytes=cache_mb << 20,
                                         parallel=parallel))


def _turn(session: str, n: int) -> list[ChatMessage]:
    history = [ChatMessage("system", "You are helpful.")]
    for i in range(n):
        history.append(ChatMessage("user", f"{session} question {i}: " + "tell me about the sea " * 12))
        if i < n - 1:
            history.append(ChatMessage("assistant", f"answer {i} for {session}"))
    return history


def test_restored_snapshot_answers_like_a_live_context(model: Path) -> None:
    live, cached = _backend(model, 0), _backend(model, 64)
    try:
        # live: A's second turn right after its first (llama.cpp reuses the context it holds);
        # cached: B's turn in between evicts A from the context, so A's prefix must come from the snapshot.
        live.chat(_turn("A", 1))
        cached.chat(_turn("A", 1))
        cached.chat(_turn("B", 1))
        expected = live.chat(_turn("A", 2))
        got = cached.chat(_turn("A", 2))
        assert cached.prefix_cache is not None
        assert cached.prefix_cache.stats.hits == 1
        assert cached.prefix_cache.stats.tokens_saved > 100
        assert got == expected
    finally:
        live.close()
        cached.close()


def test_snapshots_stay_within_capacity(model: Path) -> None:
    backend = _backend(model, 1)  # 1 MiB: a few snapshots of the tiny model at most
    try:
        for session in "ABCDEFGH":
            backend.chat(_turn(session, 2))
        cache = backend.prefix_cache
        assert cache is not None
        assert 0 < cache.stats.bytes <= 1 << 20
        assert cache.stats.entries < 8
    finally:
        backend.close()


def test_a_conversation_that_keeps_its_slot_needs_no_snapshot(model: Path) -> None:
    backend = _backend(model, 64)
    try:
        for n in (1, 2, 3):
            backend.chat(_turn("A", n))
        engine = backend._engine
        assert engine is not None and backend.prefix_cache is not None
        assert backend.prefix_cache.stats.entries == 0  # A never left its slot
        assert engine.reused_tokens > 200  # turns 2 and 3 read only what was new
    finally:
        backend.close()


def test_two_conversations_alternating_on_two_slots_each_reuse_their_own(model: Path) -> None:
    backend = _backend(model, 0, parallel=2)
    try:
        backend.chat(_turn("A", 1))
        backend.chat(_turn("B", 1))
        engine = backend._engine
        assert engine is not None
        before = engine.reused_tokens
        backend.chat(_turn("A", 2))
        backend.chat(_turn("B", 2))
        assert engine.reused_tokens - before > 200  # each found its own first turn in its own sequence
    finally:
        backend.close()


def test_llama_params_refuse_a_field_they_lack() -> None:
    """``use_mmap`` was renamed ``load_mode``: setting the old name must fail, not be silently ignored."""
    import llama_cpp

    from core_worker.llm.base import ModelLoadError
    from core_worker.llm.batch_engine import set_fields

    params = set_fields(llama_cpp.llama_model_default_params(), load_mode=llama_cpp.LLAMA_LOAD_MODE_NONE)
    assert params.load_mode == llama_cpp.LLAMA_LOAD_MODE_NONE
    with pytest.raises(ModelLoadError, match="use_mmap"):
        set_fields(llama_cpp.llama_model_default_params(), use_mmap=False)
