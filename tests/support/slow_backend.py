"""A slow, predictable model: waits ``SLOW_BACKEND_SECONDS`` and then echoes the last user message.

Channels that must hold a person while the model thinks (voice) are tested
with it (``LLM_BACKEND=tests.support.slow_backend:factory``): the delay is
real time in a real core worker, and the echo lets a test see which turn an
answer belongs to.

``tests.support.slow_backend:streaming_factory`` writes the same echo word by
word over those seconds and reports its progress like the llama.cpp backend
does (``streams = True``, ``chat(on_progress=…)``), so tests can watch a reply
being shown while it is written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from core_worker.llm import BackendConfig, ChatMessage, Completion
from core_worker.llm.base import Progress
from tests.support.echo_backend import EchoBackend


class SlowBackend(EchoBackend):
    name = "slow"

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.delay = float(os.environ.get("SLOW_BACKEND_SECONDS", "2"))

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        time.sleep(self.delay)
        return super().chat(messages, max_tokens=max_tokens, stop=stop, json_schema=json_schema)


class SlowStreamingBackend(SlowBackend):
    name = "slow-streaming"
    streams = True

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None, on_progress: Progress | None = None,
    ) -> Completion:
        text = self.answer(self.last_text(messages))
        words = text.split(" ")
        for count in range(1, len(words) + 1):
            time.sleep(self.delay / len(words))
            if on_progress is not None:
                on_progress(partial(" ".join, words[:count]))
        return Completion(text, self.prompt_tokens(messages), len(words), "stop")


def factory(config: BackendConfig) -> SlowBackend:
    return SlowBackend(config)


def streaming_factory(config: BackendConfig) -> SlowStreamingBackend:
    return SlowStreamingBackend(config)
