"""Turning a session's history and a new message into the model's chat messages.

Pure functions: no Redis, no model. The budget is counted with the model's
own tokenizer (passed in), so trimming is right for whatever model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core_worker.llm import ChatMessage
from core_worker.sessions import Turn

__all__ = ["PER_MESSAGE_OVERHEAD", "PromptTooLarge", "build_messages", "prompt_budget"]

# Tokens a chat template adds around each message (role markers, separators);
# generous so that the rendered prompt never overflows the context.
PER_MESSAGE_OVERHEAD = 8
TRUNCATION_NOTE = "\n[message truncated to fit the model's context]"


class PromptTooLarge(ValueError):
    """The fixed part of a prompt (system prompt, tool descriptions, a helper's result) leaves no room."""


def prompt_budget(context_length: int, max_tokens: int) -> int:
    """Tokens a prompt may use: the context minus the room the reply needs. One rule for every model call."""
    return context_length - max_tokens


@dataclass(frozen=True)
class Prompt:
    messages: list[ChatMessage]
    history_ids: list[str]  # earlier messages whose turns made it into the prompt, oldest first


def build_messages(
    *,
    system_prompt: str,
    history: Sequence[Turn],
    text: str,
    count_tokens: Callable[[str], int],
    budget: int,
    note: str = "",
) -> Prompt:
    """System prompt, as many of the latest turns as fit ``budget`` tokens, then the new text (+ ``note``).

    History goes first: turns are dropped oldest first and by whole exchanges (question, helper
    calls, answer), so the model never sees an answer without its question. A new text that alone does
    not fit is cut next, with a note the model can see. ``note`` (a helper's result) is never cut; when it
    and the system prompt alone do not fit, ``PromptTooLarge``.
    """

    def cost(content: str) -> int:
        return count_tokens(content) + PER_MESSAGE_OVERHEAD

    system = [ChatMessage("system", system_prompt)] if system_prompt else []
    suffix = f"\n\n{note}" if note else ""
    remaining = budget - sum(cost(m.content) for m in system) - (count_tokens(suffix) if suffix else 0)
    if cost(text) > remaining:
        room = remaining - cost(TRUNCATION_NOTE)
        if room <= 0:
            raise PromptTooLarge(f"the fixed prompt leaves {remaining} of {budget} tokens for the message")
        text = _truncate(text, room, count_tokens) + TRUNCATION_NOTE
    remaining -= cost(text)
    text += suffix

    kept: list[ChatMessage] = []
    kept_ids: list[str] = []
    for group in reversed(_groups(history)):
        rendered = _render(group)
        group_cost = sum(cost(m.content) for m in rendered)
        if group_cost > remaining:
            break
        remaining -= group_cost
        kept[:0] = rendered
        kept_ids[:0] = [group[0].message_id]
    return Prompt([*system, *kept, ChatMessage("user", text)], list(dict.fromkeys(kept_ids)))


def _groups(history: Sequence[Turn]) -> list[list[Turn]]:
    """Group turns as user (+ helper calls) + assistant exchanges; a stray turn stands alone."""
    groups: list[list[Turn]] = []
    for turn in history:
        if turn.role == "user" or not groups or groups[-1][-1].role == "assistant":
            groups.append([turn])
        else:
            groups[-1].append(turn)
    return groups


def _render(group: Sequence[Turn]) -> list[ChatMessage]:
    """Helper calls are folded into their user turn: chat templates expect user/assistant alternation."""
    messages: list[ChatMessage] = []
    for turn in group:
        if turn.role == "tool":
            note = tool_note(turn.content)
            if messages and messages[-1].role == "user":
                messages[-1] = ChatMessage("user", f"{messages[-1].content}\n\n{note}")
            else:
                messages.append(ChatMessage("user", note))
        else:
            messages.append(ChatMessage(turn.role, turn.content))
    return messages


def tool_note(content: str) -> str:
    """How a recorded helper call reads to the model."""
    try:
        call = json.loads(content)
        name = f"{call['helper']}.{call['capability']}"
    except (ValueError, KeyError, TypeError):
        return f"[helper call: {content}]"
    if call.get("error"):
        return f"[{name} failed: {call['error']}]"
    return f"[Result of {name}: {json.dumps(call.get('output'), ensure_ascii=False)}]"


def _truncate(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` within ``max_tokens`` (binary search on characters)."""
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if count_tokens(text[:mid]) + PER_MESSAGE_OVERHEAD <= max_tokens:
            low = mid
        else:
            high = mid - 1
    return text[:low]
