"""Deciding whether a message needs a helper, and turning a helper's result into a reply.

``decide`` returns one of: a call to make, a text to reply directly (a
mistyped command), or nothing (the model answers on its own).  ``admit``
says whether a decided call may go out now: not while the helper's circuit
is open, not past the sender's helper-call budget.  The processor then
turns the call's result into the reply (``call_outcome`` and the texts
below): the helper's own text for direct-reply capabilities, the model's
answer given the output otherwise; the helper's refusal of the input in its
own words; a graceful notice when the helper failed; "slow down" past the
budget.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core_worker.conversation import PER_MESSAGE_OVERHEAD, PromptTooLarge, build_messages, prompt_budget
from core_worker.helper_limits import HelperCallLimit
from core_worker.llm import ChatMessage, LLMBackend
from core_worker.routing import (
    ToolCall,
    ambiguity_text,
    argument_errors,
    arguments_from_text,
    attachment_arguments,
    attachment_candidates,
    explicit_request,
    parse_tool_choice,
    tool_choice_prompt,
    tool_choice_schema,
)
from redis_stores.helper_registry import Capability, HelperRegistry
from tasks.schemas import Attachment, Envelope

__all__ = [
    "Decision",
    "HelperFlow",
    "call_outcome",
    "failure_text",
    "refusal_note",
    "refused_text",
    "result_note",
    "slow_down_text",
    "unavailable_text",
]

log = logging.getLogger(__name__)

# A tool call's JSON (name and arguments) must fit, whatever LLM_MAX_TOKENS allows for prose replies.
TOOL_CHOICE_MIN_TOKENS = 256


@dataclass(frozen=True)
class Decision:
    call: ToolCall | None = None
    text: str | None = None  # reply this directly (e.g. how to use a command)


def unavailable_text(helper: str) -> str:
    return f"Sorry, the {helper} helper is unavailable right now, so I can't do that at the moment. Please try later."


def refused_text(helper: str, message: str) -> str:
    """The helper's refusal of this input, in its own words: "The calculator couldn't do that: division by zero."."""
    message = message.strip()
    return f"The {helper} couldn't do that: {message}{'' if message.endswith(('.', '!', '?', '…')) else '.'}"


def slow_down_text(retry_after: int) -> str:
    wait = f"{retry_after} seconds" if retry_after < 120 else f"{math.ceil(retry_after / 60)} minutes"
    return f"You are asking my helpers too often. Please slow down and try again in about {wait}."


def result_note(qualified: str, output: dict[str, Any]) -> str:
    return f"[Result of {qualified}: {json.dumps(output, ensure_ascii=False)}]\nUse this result to answer."


def refusal_note(qualified: str, message: str) -> str:
    return (f"[{qualified} could not do this: {message}]\n"
            "Tell the person it could not be done and why, in a sentence.")


def call_outcome(result: dict[str, Any]) -> str:
    """``ok``, ``refused``, ``limited`` or ``failed`` (results recorded before outcomes existed: by their error)."""
    if outcome := result.get("outcome"):
        return str(outcome)
    return "failed" if result.get("error") or result.get("output") is None else "ok"


def failure_text(helper: str, result: dict[str, Any]) -> str:
    """The reply to a call that gave no output, when no model phrases it."""
    outcome = call_outcome(result)
    if outcome == "refused":
        return refused_text(helper, str(result.get("error") or "it refused the request"))
    if outcome == "limited":
        return slow_down_text(int(result.get("retry_after") or 60))
    return unavailable_text(helper)


@dataclass
class HelperFlow:
    registry: HelperRegistry
    llm: Callable[[], LLMBackend]
    system_prompt: str
    max_tokens: int
    limit: HelperCallLimit | None = None

    def capabilities(self) -> list[Capability]:
        return [c for helper in self.registry.all() for c in helper.capabilities]

    def routing_system_prompt(self, capabilities: Sequence[Capability]) -> str:
        """The system message of a tool choice: the conversation's system prompt, then the tools."""
        return f"{self.system_prompt}\n\n{tool_choice_prompt(capabilities)}"

    def admit(self, envelope: Envelope, call: ToolCall) -> dict[str, Any] | None:
        """None when the call may be made now; else the result to answer with at once (no call is made).

        Only a peek at the circuit: the call task claims the half-open trial itself, so it is claimed once.
        """
        if self.registry.circuit(call.capability.helper) == "open":
            return {"output": None, "error": "circuit open", "outcome": "failed", "duration_ms": 0}
        retry_after = self.limit.hit(envelope.channel, envelope.sender) if self.limit else None
        if retry_after is not None:
            return {"output": None, "error": "too many helper calls from this sender", "outcome": "limited",
                    "retry_after": retry_after, "duration_ms": 0}
        return None

    def decide(self, envelope: Envelope) -> Decision:
        capabilities = self.capabilities()
        if not capabilities:
            return Decision()
        explicit = explicit_request(envelope.text, capabilities)
        if explicit is not None:
            if explicit.ambiguous:
                return Decision(text=ambiguity_text(f"/{explicit.named}", explicit.candidates))
            return self._explicit(explicit.candidates, explicit.rest, explicit.named, capabilities,
                                  envelope.attachments)
        if found := attachment_candidates(envelope.attachments, capabilities):
            attachment, accepting = found
            if len({c.helper for c in accepting}) > 1:
                return Decision(text=ambiguity_text(f"files of type {attachment.mime}", accepting))
            call = ToolCall(accepting[0], attachment_arguments(accepting[0], attachment), "attachment")
            errors = argument_errors(call.capability, call.arguments)
            return Decision(call=call) if not errors else Decision()
        return Decision(call=self._model_choice(envelope.text, capabilities, allow_none=True))

    def _explicit(
        self, candidates: Sequence[Capability], rest: str, named: str, every: Sequence[Capability],
        attachments: Sequence[Attachment] = (),
    ) -> Decision:
        if not candidates:
            names = ", ".join(f"/{c.qualified}" for c in every)
            return Decision(text=f"I don't know a command called {named!r}. Available: {names}.")
        if len(candidates) == 1:
            capability = candidates[0]
            attachment = next((a for a in attachments if capability.accepts_mime(a.mime)), None)
            if attachment is not None:  # "/helper.read" with a file it reads: the file, plus any JSON given
                given = arguments_from_text(capability, rest) if rest.startswith("{") else None
                arguments: dict[str, Any] | None = {**attachment_arguments(capability, attachment), **(given or {})}
            else:
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
        max_tokens = max(self.max_tokens, TOOL_CHOICE_MIN_TOKENS)
        system = self.routing_system_prompt(capabilities)
        budget = prompt_budget(llm.context_length, max_tokens)
        retry: list[ChatMessage] = []  # the invalid answer and the correction, on the second attempt
        for attempt in (1, 2):
            # The same budget as answering: a long message is cut (and says so), never overflows the context.
            used = sum(llm.count_tokens(m.content) + PER_MESSAGE_OVERHEAD for m in retry)
            try:
                messages = build_messages(system_prompt=system, history=(), text=text, count_tokens=llm.count_tokens,
                                          budget=budget - used).messages + retry
            except PromptTooLarge as exc:
                log.warning("no tool choice: %s (%d capabilities)", exc, len(capabilities))
                return None  # the model answers on its own
            completion = llm.chat(messages, max_tokens=max_tokens, json_schema=schema)
            try:
                return parse_tool_choice(completion.text, capabilities)
            except ValueError as exc:
                log.info("tool choice attempt %d invalid (finish=%s): %s", attempt, completion.finish_reason, exc)
                if llm.constrains_json and completion.finish_reason != "length":
                    break  # a constrained backend gives the same answer again
                retry = [ChatMessage("assistant", completion.text),
                         ChatMessage("user", f"That was not valid ({exc}). Answer with the JSON only.")]
        return None  # fall back to a plain answer
