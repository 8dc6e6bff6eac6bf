"""A zero-cost LLM backend that echoes the last user message, for benchmarks and tests only.

It isolates the pipeline's own overhead (HTTP in, Redis, Celery hops, the
session machinery, the signed callback out) from model time.  It lives in
``bench/`` on purpose and is never a product backend; select it with
``LLM_BACKEND=bench.echo_backend:factory`` (``bench`` must be importable, e.g.
``PYTHONPATH`` = the repository root).  It is the tests' echo model
(tests/support/echo_backend.py) answering the bare text, with its own token estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core_worker.llm.base import BackendConfig, ChatMessage, Completion, GenerationError
from tests.support import echo_backend

__all__ = ["EchoBackend", "factory"]


class EchoBackend(echo_backend.EchoBackend):
    """Answers with the text of the last user message; tokens are estimated as ``len(text) // 4 + 1``."""

    prefix = ""
    fallback_context = 2048

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def last_text(self, messages: Sequence[ChatMessage]) -> str:
        return echo_backend.last_user_text(messages)

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) for m in messages)

    def completion(self, messages: Sequence[ChatMessage], text: str, finish_reason: str = "stop") -> Completion:
        return Completion(text=text, prompt_tokens=self.prompt_tokens(messages),
                          completion_tokens=self.count_tokens(text), finish_reason=finish_reason)

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        if self.closed:
            raise GenerationError("backend is closed")
        return super().chat(messages, max_tokens=max_tokens, stop=stop, json_schema=json_schema)


def factory(config: BackendConfig) -> EchoBackend:
    """``LLM_BACKEND=bench.echo_backend:factory``."""
    return EchoBackend(config)
