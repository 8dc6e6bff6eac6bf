"""The one echo model every test backend is built on: it answers ``echo: <the last message>`` at once.

A backend is selected by its ``module:factory`` string (``LLM_BACKEND=tests.support.scripted_backend:factory``);
each test backend subclasses ``EchoBackend`` and changes one thing: what it answers (``answer``), which
message it reads (``last_text``), how it counts (``count_tokens``), or what happens around a generation
(``chat``).  bench/echo_backend.py is one too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core_worker.llm import BackendConfig, ChatMessage, Completion

__all__ = ["EchoBackend", "factory"]


class EchoBackend:
    name = "echo"
    parallel_safe = True  # stateless: the model process may run several of its calls at once
    constrains_json = False
    prefix = "echo: "  # what the answer starts with, before the echoed text
    fallback_context = 0  # the context length when the configuration gives none (LLM_CONTEXT <= 0); 0: keep it

    def __init__(self, config: BackendConfig) -> None:
        use_given = config.n_ctx > 0 or not self.fallback_context
        self.context_length = config.n_ctx if use_given else self.fallback_context
        self.max_tokens = config.max_tokens
        self.closed = False

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def last_text(self, messages: Sequence[ChatMessage]) -> str:
        """The text echoed: the last message's (a helper's result included)."""
        return messages[-1].content

    def answer(self, text: str, *, max_tokens: int | None = None, json_schema: dict[str, Any] | None = None) -> str:
        return f"{self.prefix}{text}"

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return self.count_tokens(" ".join(m.content for m in messages))

    def completion(self, messages: Sequence[ChatMessage], text: str, finish_reason: str = "stop") -> Completion:
        return Completion(text, self.prompt_tokens(messages), len(text.split()), finish_reason)

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        text = self.answer(self.last_text(messages), max_tokens=max_tokens, json_schema=json_schema)
        return self.completion(messages, text)

    def close(self) -> None:
        self.closed = True


def last_user_text(messages: Sequence[ChatMessage]) -> str:
    """The last *user* message's text ("" when there is none), for backends that skip a trailing tool result."""
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


def factory(config: BackendConfig) -> EchoBackend:
    """``LLM_BACKEND=tests.support.echo_backend:factory``."""
    return EchoBackend(config)
