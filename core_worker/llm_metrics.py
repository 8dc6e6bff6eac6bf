"""Measuring the model: each generation's time and tokens go to the metrics and the heartbeat.

``instrument(backend)`` wraps any backend; ``last_generation()`` is what this
process's heartbeat reports as ``tokens_per_second``.  With ``log_prompts``
(``LLM_LOG_PROMPTS``) each prompt is logged as the model receives it: the
local backends' rendered chat template (``render_prompt``), or the messages as
JSON for a backend that renders elsewhere (an OpenAI-compatible server).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from core_worker.llm import ChatMessage, Completion, LLMBackend
from telemetry import metrics

__all__ = ["PROMPT_LOG_PREFIX", "InstrumentedBackend", "instrument", "last_generation", "prompt_log"]

_last: dict[str, float] = {}
prompt_log = logging.getLogger("core_worker.prompts")
PROMPT_LOG_PREFIX = "prompt "  # then the prompt as a JSON string


def last_generation() -> dict[str, float]:
    """The last generation of this process: tokens, seconds, tokens per second (empty before the first)."""
    return dict(_last)


class InstrumentedBackend:
    """Delegates everything to ``inner``; times ``chat`` (a dict update, no I/O)."""

    def __init__(self, inner: LLMBackend, backend: str, *, log_prompts: bool = False) -> None:
        self.inner, self.backend, self.log_prompts = inner, backend, log_prompts
        self.name = inner.name
        self.context_length = inner.context_length
        self.constrains_json = inner.constrains_json

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Completion:
        if self.log_prompts:
            self._log_prompt(messages)
        started = time.perf_counter()
        completion = self.inner.chat(messages, **kwargs)
        seconds = time.perf_counter() - started
        metrics.observe("switchboard_generation_seconds", seconds, backend=self.backend)
        metrics.inc("switchboard_generated_tokens_total", completion.completion_tokens, backend=self.backend)
        metrics.inc("switchboard_prompt_tokens_total", completion.prompt_tokens, backend=self.backend)
        _last.update(tokens=completion.completion_tokens, seconds=round(seconds, 4), at=time.time(),
                     tokens_per_second=round(completion.completion_tokens / seconds, 2) if seconds > 0 else 0.0)
        return completion

    def _log_prompt(self, messages: Sequence[ChatMessage]) -> None:
        render = getattr(self.inner, "render_prompt", None)
        try:
            prompt = render(messages) if callable(render) else json.dumps(
                [{"role": m.role, "content": m.content} for m in messages], ensure_ascii=False)
        except Exception as exc:  # the chat call itself reports a template that cannot render
            prompt = f"(not rendered: {exc})"
        prompt_log.info("%s%s", PROMPT_LOG_PREFIX, json.dumps(prompt, ensure_ascii=False))

    def __getattr__(self, name: str) -> Any:  # count_tokens, close, chat_template, ...
        return getattr(self.inner, name)


def instrument(backend: LLMBackend, name: str, *, log_prompts: bool = False) -> LLMBackend:
    wrapped: LLMBackend = InstrumentedBackend(backend, name, log_prompts=log_prompts)
    return wrapped
