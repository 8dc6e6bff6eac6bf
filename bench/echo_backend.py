"""A zero-cost LLM backend that echoes the last user message, for benchmarks and tests only.

It isolates the pipeline's own overhead (HTTP in, Redis, Celery hops, the
session machinery, the signed callback out) from model time.  It lives in
``bench/`` on purpose and is never a product backend; select it with
``LLM_BACKEND=bench.echo_backend:factory`` (``bench`` must be importable, e.g.
``PYTHONPATH`` = the repository root).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core_worker.llm.base import BackendConfig, ChatMessage, Completion, GenerationError

__all__ = ["EchoBackend", "factory"]


class EchoBackend:
    """Answers with the text of the last user message; tokens are estimated as ``len(text) // 4 + 1``."""

    name = "echo"
    constrains_json = False

    def __init__(self, config: BackendConfig) -> None:
        self.context_length = config.n_ctx if config.n_ctx > 0 else 2048
        self.max_tokens = config.max_tokens
        self._closed = False

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        if self._closed:
            raise GenerationError("backend is closed")
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return Completion(
            text=last,
            prompt_tokens=sum(self.count_tokens(m.content) for m in messages),
            completion_tokens=self.count_tokens(last),
            finish_reason="stop",
        )

    def close(self) -> None:
        self._closed = True


def factory(config: BackendConfig) -> EchoBackend:
    """``LLM_BACKEND=bench.echo_backend:factory``."""
    return EchoBackend(config)
