"""A slow, predictable model: waits ``SLOW_BACKEND_SECONDS`` and then echoes the last user message.

Channels that must hold a person while the model thinks (voice) are tested
with it (``LLM_BACKEND=tests.integration.slow_backend:factory``): the delay is
real time in a real core worker, and the echo lets a test see which turn an
answer belongs to.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from core_worker.llm import BackendConfig, ChatMessage, Completion


class SlowBackend:
    name = "slow"
    constrains_json = False

    def __init__(self, config: BackendConfig) -> None:
        self.context_length = config.n_ctx
        self.delay = float(os.environ.get("SLOW_BACKEND_SECONDS", "2"))

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        time.sleep(self.delay)
        text = f"echo: {messages[-1].content}"
        return Completion(text, self.count_tokens(" ".join(m.content for m in messages)), len(text.split()), "stop")

    def close(self) -> None:
        pass


def factory(config: BackendConfig) -> SlowBackend:
    return SlowBackend(config)
