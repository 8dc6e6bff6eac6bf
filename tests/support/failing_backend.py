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
from tests.support.echo_backend import EchoBackend


class FailingBackend(EchoBackend):
    name = "failing"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.flag = Path(os.environ["FAILING_BACKEND_FLAG"])

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        if self.flag.exists():
            raise GenerationError("the test says this model is broken")
        return super().chat(messages, max_tokens=max_tokens, stop=stop, json_schema=json_schema)


def factory(config: BackendConfig) -> FailingBackend:
    return FailingBackend(config)
