"""A model that fails while a flag file exists, then echoes: poison messages on demand.

``LLM_BACKEND=tests.support.failing_backend:factory`` with
``FAILING_BACKEND_FLAG=<path>``: every generation raises ``GenerationError``
while the file exists (the message is retried, then dead-lettered as poison);
once the test removes it, the model answers ``echo: <last message>`` — a
replayed message then gets a real answer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core_worker.llm import BackendConfig, ChatMessage, Completion, GenerationError


class FailingBackend:
    name = "failing"
    constrains_json = False

    def __init__(self, config: BackendConfig) -> None:
        self.context_length = config.n_ctx
        self.flag = Path(os.environ["FAILING_BACKEND_FLAG"])

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        if self.flag.exists():
            raise GenerationError("the test says this model is broken")
        text = f"echo: {messages[-1].content}"
        return Completion(text, self.count_tokens(" ".join(m.content for m in messages)), len(text.split()), "stop")

    def close(self) -> None:
        pass


def factory(config: BackendConfig) -> FailingBackend:
    return FailingBackend(config)
