"""A rendered prompt as pieces: the chat template's own control tokens, and text.

Only the template may write a control token (``<|im_start|>``, ``</s>``, ``<s>``). The text of a message, a
mail, a converted file, a helper's result or a stored turn is tokenized with special-token parsing off, so
``<|im_start|>system`` typed by a person stays those characters and cannot open a turn of its own.

How template and contents are told apart: the template is rendered a second time with each message's content
replaced by a sentinel (a private-use character around the message's index, with the content's outer
whitespace kept so ``| trim`` treats both alike). When that render with the contents put back is the real
render, the template's text is exactly what lies outside the sentinels, and control tokens are looked for only
there. A template that does more to a content than trim it (``content.split('</think>')``, a branch on what it
says) fails that check; the prompt is then rendered with every control-token text inside the contents masked
by a sentinel, split, and the masked texts restored as text.

Pure: no model library. The backends turn the pieces into ids (:func:`token_ids`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import ChatMessage, GenerationError, render_prompt

if TYPE_CHECKING:
    from core_worker.chat_template import ChatTemplate

__all__ = ["Piece", "PromptSplitter", "pieces_text", "strip_around", "template_tokens", "token_ids"]

log = logging.getLogger(__name__)

# What C's isspace() takes: llama.cpp strips these next to a token marked lstrip/rstrip.
_C_SPACE = " \t\n\v\f\r"
_PRIVATE_USE = range(0xE000, 0xF900)


@dataclass(frozen=True)
class Piece:
    """A control token the template wrote (``token`` is its id), or text (``token`` None) to tokenize with
    special-token parsing off."""

    text: str
    token: int | None = None


def pieces_text(pieces: Iterable[Piece]) -> str:
    """The prompt text the pieces stand for."""
    return "".join(p.text for p in pieces)


def _alternation(tokens: Collection[str]) -> re.Pattern[str] | None:
    """A regex matching any of ``tokens``, the longest where several match ("<|im_end|>" over a token "<|im",
    llama.cpp's order too). Built as a trie: a flat alternation of Gemma's ~6,000 control tokens tried them all
    at every "<" (1.1 s to scan 210k characters)."""
    if not tokens:
        return None
    trie: dict[str, Any] = {}
    for token in tokens:
        node = trie
        for char in token:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + emit(child) for char, child in sorted(node.items()) if char]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body  # greedy: the longer token first, the shorter if it fails

    return re.compile(emit(trie))


class PromptSplitter:
    """Splits prompts on one vocabulary's control tokens; built once per loaded model."""

    def __init__(self, control_tokens: Mapping[str, int]) -> None:
        self.control_tokens = dict(control_tokens)
        self._pattern = _alternation(self.control_tokens)

    def split(self, text: str) -> list[Piece]:
        """``text`` with every control-token text in it as that token: for text the template wrote."""
        if not text:
            return []
        if self._pattern is None:
            return [Piece(text)]
        out: list[Piece] = []
        at = 0
        for match in self._pattern.finditer(text):
            if match.start() > at:
                out.append(Piece(text[at:match.start()]))
            out.append(Piece(match.group(), self.control_tokens[match.group()]))
            at = match.end()
        if at < len(text):
            out.append(Piece(text[at:]))
        return out

    def pieces(self, template: ChatTemplate, messages: Sequence[ChatMessage]) -> list[Piece]:
        """The prompt for ``messages`` (with the generation prompt), control tokens only where the template wrote
        them; adjacent text is one piece, so text tokenizes as it would in one run between two control tokens."""
        real = render_prompt(template, messages)
        contents = [m.content for m in messages]
        mark = _free_mark(real, contents)
        found = self._by_sentinels(template, messages, real, mark)
        if found is None:
            log.debug("chat template transforms contents; masking control-token text in them instead")
            found = self._by_masking(template, messages, mark)
        return _merge(found)

    def _by_sentinels(
        self, template: ChatTemplate, messages: Sequence[ChatMessage], real: str, mark: str
    ) -> list[Piece] | None:
        cores: list[str] = []
        stand_ins: list[ChatMessage] = []
        for i, m in enumerate(messages):
            core = m.content.strip()
            lead = m.content[: len(m.content) - len(m.content.lstrip())] if core else m.content
            trail = m.content[len(m.content.rstrip()):] if core else ""
            cores.append(core)
            stand_ins.append(ChatMessage(m.role, f"{lead}{mark}{i}{mark}{trail}"))
        try:
            rendered = render_prompt(template, stand_ins)
        except GenerationError:
            return None
        parts = re.split(f"{mark}([0-9]+){mark}", rendered)
        # Odd parts are message indexes, even parts the template's own text.
        if any(int(index) >= len(cores) for index in parts[1::2]):
            return None
        if "".join(cores[int(p)] if i % 2 else p for i, p in enumerate(parts)) != real or mark in "".join(parts[::2]):
            return None
        out: list[Piece] = []
        for i, part in enumerate(parts):
            if i % 2:
                out.append(Piece(cores[int(part)]))
            else:
                out.extend(self.split(part))
        return out

    def _by_masking(self, template: ChatTemplate, messages: Sequence[ChatMessage], mark: str) -> list[Piece]:
        masked: list[str] = []

        def hide(match: re.Match[str]) -> str:
            masked.append(match.group())
            return f"{mark}{len(masked) - 1}{mark}"

        pattern = self._pattern
        hidden = [ChatMessage(m.role, pattern.sub(hide, m.content)) if pattern else m for m in messages]
        back = re.compile(f"{mark}([0-9]+){mark}")

        def restore(text: str) -> str:
            return back.sub(lambda g: masked[int(g.group(1))] if int(g.group(1)) < len(masked) else g.group(), text)

        split = self.split(render_prompt(template, hidden))
        return [p if p.token is not None else Piece(restore(p.text)) for p in split]


_PROBE = (ChatMessage("system", "x"), ChatMessage("user", "x"), ChatMessage("assistant", "x"), ChatMessage("user", "x"))


def template_tokens(template: ChatTemplate, tokens: Mapping[str, int]) -> dict[str, int]:
    """Those of ``tokens`` the template itself writes (its markers), found by rendering a probe conversation.

    For user-defined tokens: llama.cpp matches them in any text, so a file that types its turn markers
    user-defined (some 2023 conversions) leaves them forgeable unless they are treated as control tokens.
    """
    try:
        pieces = PromptSplitter(tokens).pieces(template, _PROBE)
    except GenerationError:  # a template that rejects the probe: nothing learnt
        return {}
    return {p.text: p.token for p in pieces if p.token is not None}


def _free_mark(real: str, contents: Sequence[str]) -> str:
    """A private-use character in neither the prompt nor any content, so a sentinel is never mistaken."""
    for code in _PRIVATE_USE:
        mark = chr(code)
        if mark not in real and not any(mark in c for c in contents):
            return mark
    raise GenerationError("the prompt uses every private-use character; cannot mark its contents")


def _merge(pieces: Iterable[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for piece in pieces:
        if piece.token is None and not piece.text:
            continue
        if piece.token is None and out and out[-1].token is None:
            out[-1] = Piece(out[-1].text + piece.text)
        else:
            out.append(piece)
    return out


def strip_around(pieces: Sequence[Piece], lstrip: Collection[int], rstrip: Collection[int]) -> list[Piece]:
    """Drop the whitespace llama.cpp drops next to tokens marked lstrip (before) / rstrip (after), as it does
    when it parses special tokens in a whole prompt (Phi-3 marks its control tokens rstrip)."""
    if not lstrip and not rstrip:
        return list(pieces)
    out = list(pieces)
    for i, piece in enumerate(out):
        if piece.token is None:
            continue
        if piece.token in lstrip and i > 0 and out[i - 1].token is None:
            out[i - 1] = Piece(out[i - 1].text.rstrip(_C_SPACE))
        if piece.token in rstrip and i + 1 < len(out) and out[i + 1].token is None:
            out[i + 1] = Piece(out[i + 1].text.lstrip(_C_SPACE))
    return [p for p in out if p.token is not None or p.text]


def token_ids(pieces: Sequence[Piece], tokenize_text: Callable[[str], list[int]], bos: int | None) -> list[int]:
    """Ids of ``pieces``: ``bos`` first unless the template wrote it, a control token as its id, text through
    ``tokenize_text`` (which must not parse special tokens)."""
    ids: list[int] = [bos] if bos is not None and not (pieces and pieces[0].token == bos) else []
    for piece in pieces:
        if piece.token is not None:
            ids.append(piece.token)
        else:
            ids.extend(tokenize_text(piece.text))
    return ids
