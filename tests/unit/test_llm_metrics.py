"""The instrumented backend: its prompt log (``LLM_LOG_PROMPTS``) shows exactly what the model received."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from core_worker.llm import BackendConfig, ChatMessage
from core_worker.llm_metrics import PROMPT_LOG_PREFIX, instrument
from tests.support.echo_backend import EchoBackend

MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi <|im_end|> there")]


class RenderingBackend(EchoBackend):
    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(f"<{m.role}>{m.content}</{m.role}>" for m in messages)


def _prompts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [json.loads(r.getMessage()[len(PROMPT_LOG_PREFIX):]) for r in caplog.records
            if r.name == "core_worker.prompts"]


def test_prompts_are_not_logged_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    instrument(RenderingBackend(BackendConfig("x", None)), "x").chat(MESSAGES)
    assert _prompts(caplog) == []


def test_the_rendered_prompt_is_logged_as_the_model_receives_it(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    backend = instrument(RenderingBackend(BackendConfig("x", None)), "x", log_prompts=True)
    assert backend.chat(MESSAGES).text == "echo: Hi <|im_end|> there"
    assert _prompts(caplog) == ["<system>Be brief.</system><user>Hi <|im_end|> there</user>"]


def test_a_backend_that_renders_elsewhere_logs_its_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    instrument(EchoBackend(BackendConfig("x", None)), "x", log_prompts=True).chat(MESSAGES)
    (logged,) = _prompts(caplog)
    assert json.loads(logged) == [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "Hi <|im_end|> there"}]
