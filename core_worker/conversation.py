"""Turning a session's history and a new message into the model's chat messages.

Pure functions: no Redis, no model. The budget is counted with the model's
own tokenizer (passed in), so trimming is right for whatever model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from core_worker.llm import ChatMessage
from core_worker.sessions import Turn

__all__ = ["PER_MESSAGE_OVERHEAD", "build_messages"]

# Tokens a chat template adds around each message (role markers, separators);
# generous so that the rendered prompt never overflows the context.
PER_MESSAGE_OVERHEAD = 8
TRUNCATION_NOTE = "\n[message truncated to fit the model's context]"


def build_messages(
    *,
    system_prompt: str,
    history: Sequence[Turn],
    text: str,
    count_tokens: Callable[[str], int],
    budget: int,
) -> list[ChatMessage]:
    """System prompt, as many of the latest turns as fit ``budget`` tokens, then the new text.

    Turns are dropped oldest first and in user/assistant pairs, so the model
    never sees an answer without its question. A new text that alone does
    not fit is cut, with a note the model can see.
    """

    def cost(content: str) -> int:
        return count_tokens(content) + PER_MESSAGE_OVERHEAD

    system = [ChatMessage("system", system_prompt)] if system_prompt else []
    remaining = budget - sum(cost(m.content) for m in system)
    if cost(text) > remaining:
        text = _truncate(text, max(remaining - cost(TRUNCATION_NOTE), 0), count_tokens) + TRUNCATION_NOTE
    remaining -= cost(text)

    kept: list[ChatMessage] = []
    pairs = _pairs(history)
    for pair in reversed(pairs):
        pair_cost = sum(cost(t.content) for t in pair)
        if pair_cost > remaining:
            break
        remaining -= pair_cost
        kept[:0] = [ChatMessage(t.role, t.content) for t in pair]
    return [*system, *kept, ChatMessage("user", text)]


def _pairs(history: Sequence[Turn]) -> list[tuple[Turn, ...]]:
    """Group turns as (user, assistant) pairs; a stray turn stands alone."""
    pairs: list[tuple[Turn, ...]] = []
    i = 0
    while i < len(history):
        if history[i].role == "user" and i + 1 < len(history) and history[i + 1].role == "assistant":
            pairs.append((history[i], history[i + 1]))
            i += 2
        else:
            pairs.append((history[i],))
            i += 1
    return pairs


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
