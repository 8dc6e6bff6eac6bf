"""Deciding whether a message needs a helper, and turning a helper's result into a reply.

``decide`` returns one of: a call to make, a text to reply directly (a
mistyped command), or nothing (the model answers on its own).  ``compose``
turns a finished call into the reply: the helper's own text for
direct-reply capabilities, the model's answer given the output otherwise,
and a graceful notice when the helper failed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core_worker.llm import ChatMessage, LLMBackend
from core_worker.routing import (
    ToolCall,
    argument_errors,
    arguments_from_text,
    attachment_call,
    explicit_request,
    parse_tool_choice,
    tool_choice_prompt,
    tool_choice_schema,
)
from tasks.helpers import Capability, HelperRegistry
from tasks.schemas import Envelope

__all__ = ["Decision", "HelperFlow", "result_note", "unavailable_text"]

log = logging.getLogger(__name__)

# A tool call's JSON (name and arguments) must fit, whatever LLM_MAX_TOKENS allows for prose replies.
TOOL_CHOICE_MIN_TOKENS = 256


@dataclass(frozen=True)
class Decision:
    call: ToolCall | None = None
    text: str | None = None  # reply this directly (e.g. how to use a command)


def unavailable_text(helper: str) -> str:
    return f"Sorry, the {helper} helper is unavailable right now, so I can't do that at the moment. Please try later."


def result_note(qualified: str, output: dict[str, Any]) -> str:
    return f"[Result of {qualified}: {json.dumps(output, ensure_ascii=False)}]\nUse this result to answer."


@dataclass
class HelperFlow:
    registry: HelperRegistry
    llm: Callable[[], LLMBackend]
    system_prompt: str
    max_tokens: int

    def capabilities(self) -> list[Capability]:
        return [c for helper in self.registry.all() for c in helper.capabilities]

    def decide(self, envelope: Envelope) -> Decision:
        capabilities = self.capabilities()
        if not capabilities:
            return Decision()
        explicit = explicit_request(envelope.text, capabilities)
        if explicit is not None:
            return self._explicit(explicit.candidates, explicit.rest, explicit.named, capabilities)
        if call := attachment_call(envelope.attachments, capabilities):
            errors = argument_errors(call.capability, call.arguments)
            return Decision(call=call) if not errors else Decision()
        return Decision(call=self._model_choice(envelope.text, capabilities, allow_none=True))

    def _explicit(
        self, candidates: Sequence[Capability], rest: str, named: str, every: Sequence[Capability]
    ) -> Decision:
        if not candidates:
            names = ", ".join(f"/{c.qualified}" for c in every)
            return Decision(text=f"I don't know a command called {named!r}. Available: {names}.")
        if len(candidates) == 1:
            capability = candidates[0]
            arguments = arguments_from_text(capability, rest)
            if arguments is None:
                chosen = self._model_choice(rest, candidates, allow_none=False)
                arguments = chosen.arguments if chosen else {}
            errors = argument_errors(capability, arguments)
            if errors:
                return Decision(text=f"/{capability.qualified}: {capability.description} — could not use that: "
                                     + "; ".join(errors))
            return Decision(call=ToolCall(capability, arguments, "explicit"))
        chosen = self._model_choice(rest, candidates, allow_none=False)
        if chosen is None:
            names = ", ".join(f"/{c.qualified}" for c in candidates)
            return Decision(text=f"Which one? {names}")
        return Decision(call=ToolCall(chosen.capability, chosen.arguments, "explicit"))

    def _model_choice(self, text: str, capabilities: Sequence[Capability], *, allow_none: bool) -> ToolCall | None:
        """Ask the model for a tool call; constrained where the backend can, else validated and re-asked once."""
        llm = self.llm()
        schema = tool_choice_schema(capabilities)
        if not allow_none:
            schema = {"anyOf": schema["anyOf"][:-1]}
        messages = [
            ChatMessage("system", f"{self.system_prompt}\n\n{tool_choice_prompt(capabilities)}"),
            ChatMessage("user", text),
        ]
        for attempt in (1, 2):
            completion = llm.chat(messages, max_tokens=max(self.max_tokens, TOOL_CHOICE_MIN_TOKENS), json_schema=schema)
            try:
                return parse_tool_choice(completion.text, capabilities)
            except ValueError as exc:
                log.info("tool choice attempt %d invalid (finish=%s): %s", attempt, completion.finish_reason, exc)
                if llm.constrains_json and completion.finish_reason != "length":
                    break  # a constrained backend gives the same answer again
                messages = [*messages, ChatMessage("assistant", completion.text),
                            ChatMessage("user", f"That was not valid ({exc}). Answer with the JSON only.")]
        return None  # fall back to a plain answer
