"""The backend-neutral LLM interface the core worker talks to.

Everything here is plain data and a Protocol, so importing it never loads a
model library: llama.cpp children hang if the parent touched the model before
``fork()``, so models are only loaded by :func:`core_worker.llm.load_backend`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from core_worker.chat_template import ChatTemplate, GGUFInfo

__all__ = [
    "DEFAULT_REPEAT_PENALTY",
    "DEFAULT_TOP_K",
    "DEFAULT_TOP_P",
    "BackendConfig",
    "ChatMessage",
    "Completion",
    "GenerationError",
    "LLMBackend",
    "LLMError",
    "ModelLoadError",
    "Progress",
    "apply_stop",
    "chat_with_progress",
    "conversation_owner",
    "effective_context",
    "generating_for",
    "hold_back_stop",
    "merge_stops",
    "read_model",
    "render_prompt",
]

# Sampling settings shared by the local backends so that llama_cpp and
# ctransformers sample alike (their library defaults differ).
DEFAULT_TOP_K = 40
DEFAULT_TOP_P = 0.95
DEFAULT_REPEAT_PENALTY = 1.1


# Called by a streaming backend after every generated token with a function that returns the
# reply's text so far; the callee decides whether the moment is worth decoding it (a clock check),
# so a backend pays microseconds per token and nothing more.
Progress = Callable[[Callable[[], str]], None]


_owner: contextvars.ContextVar[str] = contextvars.ContextVar("conversation_owner", default="")


@contextlib.contextmanager
def generating_for(owner: str) -> Iterator[None]:
    """Model calls made inside are ``owner``'s (a session): a backend that reuses cached prompt tokens reuses
    another owner's no further than the shared system prompt (core_worker/llm/batch_engine.py)."""
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)


def conversation_owner() -> str:
    """Whose conversation the model calls made here are ("" when nobody said)."""
    return _owner.get()


class LLMError(Exception):
    """Base of every error a backend raises, so callers can catch one type."""


class ModelLoadError(LLMError):
    """The backend could not be created (missing file, wrong architecture, unknown backend)."""


class GenerationError(LLMError):
    """A loaded backend failed to produce a completion (prompt too long, server error, closed)."""


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation."""

    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class Completion:
    """A finished reply plus the numbers needed for accounting and trimming."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"


@dataclass(frozen=True)
class BackendConfig:
    """Everything needed to build a backend; built from settings by the caller."""

    backend: str  # "llama_cpp" | "ctransformers" | "openai" | "some.module:factory"
    model_path: str | None  # a local GGUF (llama_cpp, ctransformers)
    n_ctx: int = 4096
    n_threads: int = 2
    max_tokens: int = 256
    temperature: float = 0.7
    seed: int | None = None
    openai_base_url: str = "http://127.0.0.1:8080/v1"
    openai_model: str = "local"
    openai_api_key: str = ""
    request_timeout: float = 120.0
    # mmap keeps the whole file mapped and counted as resident; reading it in
    # measured ~40% less memory for a 0.6 GB Q4_0 model.
    use_mmap: bool = False
    # llama_cpp: bytes of KV-cache snapshots kept so returning conversations skip their history (0 = off)
    prompt_cache_bytes: int = 0
    # conversations generated at once (LLM_PARALLEL): llama_cpp batches them, openai keeps them in flight
    parallel: int = 1
    # llama_cpp: prompt tokens read per step while others generate (LLM_PREFILL_CHUNK)
    prefill_chunk: int = 64


@runtime_checkable
class LLMBackend(Protocol):
    """What the worker needs from a model: chat, token counting, and cleanup."""

    name: str
    context_length: int
    constrains_json: bool  # True: ``json_schema`` is enforced while generating; False: callers must validate

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion: ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


def render_prompt(template: ChatTemplate, messages: Sequence[ChatMessage]) -> str:
    """The prompt both local backends send, so they see exactly the same tokens."""
    from core_worker.chat_template import ChatTemplateError

    try:
        return template.render(messages, add_generation_prompt=True)
    except ChatTemplateError as exc:
        raise GenerationError(str(exc)) from exc


def merge_stops(*groups: Sequence[str]) -> list[str]:
    """Union of stop strings in first-seen order, without empties (an empty stop would end at once)."""
    seen: dict[str, None] = {}
    for group in groups:
        for item in group:
            if item:
                seen.setdefault(item, None)
    return list(seen)


def apply_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the earliest stop string; return the text and whether one was found."""
    cut = -1
    for stop in stops:
        if not stop:
            continue
        at = text.find(stop)
        if at != -1 and (cut == -1 or at < cut):
            cut = at
    if cut == -1:
        return text, False
    return text[:cut], True


def hold_back_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` cut at a full stop string, and without a tail that may be the start of one.

    What a reply shown while it is written may display: ``"Hello <|im"`` must not flash
    ``<|im`` before ``<|im_end|>`` completes and is cut away.
    """
    text, _ = apply_stop(text, stops)
    keep = len(text)
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                keep = min(keep, len(text) - size)
                break
    return text[:keep]


def chat_with_progress(
    llm: LLMBackend, messages: Sequence[ChatMessage], *, max_tokens: int | None, on_progress: Progress | None
) -> Completion:
    """``llm.chat``, reporting progress when asked and the backend can (``streams = True``).

    A backend without streaming gives the finished reply only: its one "chunk" is the final
    answer, which follows at once, so no partial is shown for it.
    """
    if on_progress is not None and getattr(llm, "streams", False):
        completion: Completion = llm.chat(messages, max_tokens=max_tokens, on_progress=on_progress)  # type: ignore[call-arg]
        return completion
    return llm.chat(messages, max_tokens=max_tokens)


def read_model(model_path: str | None) -> GGUFInfo:
    """Check the file exists and read its metadata, turning failures into ModelLoadError."""
    if not model_path:
        raise ModelLoadError("no model file configured (model_path is empty)")
    if not Path(model_path).is_file():
        raise ModelLoadError(f"model file not found: {model_path}")
    from core_worker.chat_template import GGUFReadError, read_gguf_info

    try:
        return read_gguf_info(model_path)
    except GGUFReadError as exc:
        raise ModelLoadError(str(exc)) from exc


def effective_context(requested: int, trained: int | None) -> int:
    """Requested n_ctx, capped at the length the model was trained for.

    Past its trained length a model without rope scaling produces garbage, so
    asking for more only wastes KV-cache memory; ``requested <= 0`` means "the
    model's own length".
    """
    if trained is None or trained <= 0:
        return requested if requested > 0 else 2048
    if requested <= 0:
        return trained
    return min(requested, trained)
