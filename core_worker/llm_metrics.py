"""Measuring the model: each generation's time and tokens go to the metrics and the heartbeat.

``instrument(backend)`` wraps any backend; ``last_generation()`` is what this
process's heartbeat reports as ``tokens_per_second``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from core_worker.llm import ChatMessage, Completion, LLMBackend
from telemetry import metrics

__all__ = ["InstrumentedBackend", "instrument", "last_generation"]

_last: dict[str, float] = {}


def last_generation() -> dict[str, float]:
    """The last generation of this process: tokens, seconds, tokens per second (empty before the first)."""
    return dict(_last)


class InstrumentedBackend:
    """Delegates everything to ``inner``; times ``chat`` (a dict update, no I/O)."""

    def __init__(self, inner: LLMBackend, backend: str) -> None:
        self.inner, self.backend = inner, backend
        self.name = inner.name
        self.context_length = inner.context_length
        self.constrains_json = inner.constrains_json

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Completion:
        started = time.perf_counter()
        completion = self.inner.chat(messages, **kwargs)
        seconds = time.perf_counter() - started
        metrics.observe("switchboard_generation_seconds", seconds, backend=self.backend)
        metrics.inc("switchboard_generated_tokens_total", completion.completion_tokens, backend=self.backend)
        metrics.inc("switchboard_prompt_tokens_total", completion.prompt_tokens, backend=self.backend)
        _last.update(tokens=completion.completion_tokens, seconds=round(seconds, 4), at=time.time(),
                     tokens_per_second=round(completion.completion_tokens / seconds, 2) if seconds > 0 else 0.0)
        return completion

    def __getattr__(self, name: str) -> Any:  # count_tokens, close, chat_template, ...
        return getattr(self.inner, name)


def instrument(backend: LLMBackend, name: str) -> LLMBackend:
    wrapped: LLMBackend = InstrumentedBackend(backend, name)
    return wrapped
