"""llama-cpp-python backend: the default local engine.

We render the chat prompt ourselves (core_worker.chat_template) and feed token
ids to ``create_completion``, so this backend and the ctransformers one run
on byte-identical prompts; ``create_chat_completion`` would apply
llama-cpp-python's own formatting instead.  Only the template's own control
tokens are parsed as such: message text is tokenized with special-token
parsing off (core_worker.llm.prompt_pieces).
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core_worker.chat_template import ChatTemplate, template_for_model

from .base import (
    DEFAULT_REPEAT_PENALTY,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
    BackendConfig,
    ChatMessage,
    Completion,
    GenerationError,
    ModelLoadError,
    Progress,
    effective_context,
    hold_back_stop,
    merge_stops,
    read_model,
)
from .prefix_cache import PrefixCache
from .prompt_pieces import Piece, PromptSplitter, pieces_text, strip_around, template_tokens, token_ids

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaCppBackend", "VocabTokens", "grammar_schema", "vocab_tokens"]

log = logging.getLogger(__name__)


class LlamaCppBackend:
    """One llama.cpp model. A lock serialises every call: a ``Llama`` object
    used from two threads at once crashes the process."""

    name = "llama_cpp"
    constrains_json = True
    streams = True  # ``chat(on_progress=…)`` reports the text as it is generated

    def __init__(self, config: BackendConfig) -> None:
        info = read_model(config.model_path)
        self._config = config
        self.info = info
        self.template: ChatTemplate = template_for_model(info)
        self.context_length = effective_context(config.n_ctx, info.context_length)
        self._lock = threading.RLock()
        self._grammars: dict[str, Any] = {}
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelLoadError(f"llama-cpp-python is not installed: {exc}") from exc
        kwargs: dict[str, Any] = {
            "n_ctx": self.context_length,
            "n_threads": config.n_threads,
            "n_threads_batch": config.n_threads,
            "use_mmap": config.use_mmap,
            "n_gpu_layers": 0,
            "verbose": False,
        }
        if config.seed is not None:
            kwargs["seed"] = config.seed
        try:
            llm = Llama(model_path=info.path, **kwargs)
        except Exception as exc:  # llama-cpp-python raises ValueError/RuntimeError with little detail
            raise ModelLoadError(f"llama.cpp failed to load {info.path}: {exc}") from exc
        self._llm: Llama | None = llm
        self.prefix_cache = PrefixCache(config.prompt_cache_bytes) if config.prompt_cache_bytes > 0 else None
        vocab = vocab_tokens(llm)
        self._lstrip, self._rstrip = vocab.lstrip, vocab.rstrip
        self._splitter = PromptSplitter(vocab.control)
        forgeable = template_tokens(self.template, vocab.user_defined)
        if forgeable:
            log.warning(
                "%s types the chat template's markers %s as user-defined tokens, which llama.cpp matches in any "
                "text: a message containing them can still open a turn (a current conversion of the model marks "
                "them control; ctransformers treats them as the template's)", info.path, ", ".join(sorted(forgeable))
            )
        self._bos: int | None = llm.token_bos() if llm._model.add_bos_token() else None

    # -- helpers ---------------------------------------------------------------
    def _model(self) -> Llama:
        if self._llm is None:
            raise GenerationError("backend is closed")
        return self._llm

    def prompt_pieces(self, messages: Sequence[ChatMessage]) -> list[Piece]:
        """The prompt as the template's control tokens and text (public so tests can look inside)."""
        return strip_around(self._splitter.pieces(self.template, messages), self._lstrip, self._rstrip)

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The exact prompt text sent to the model (public so tests can compare backends)."""
        return pieces_text(self.prompt_pieces(messages))

    def tokenize_messages(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt's tokens: the template's control tokens (``</s>``, ``<|im_end|>``) as their ids, every
        other text, messages included, with special-token parsing off; BOS unless the template wrote it."""
        pieces = self.prompt_pieces(messages)
        with self._lock:
            llm = self._model()
            return token_ids(
                pieces, lambda text: list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)), self._bos
            )

    # -- LLMBackend ------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (no BOS, special-token text counted as text)."""
        if not text:
            return 0
        with self._lock:
            return len(self._model().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
        on_progress: Progress | None = None,
    ) -> Completion:
        """The reply; with ``on_progress`` the text so far is offered after every token.

        Progress rides on llama-cpp-python's per-token ``stopping_criteria`` hook (which never
        stops) rather than ``stream=True``: the completion itself is the very same non-streaming
        call, so the final text, stop handling and token usage cannot differ from a plain ``chat``.
        """
        grammar = self._grammar(json_schema) if json_schema is not None else None
        stops = merge_stops(self.template.stop, stop)
        with self._lock:
            llm = self._model()
            tokens = self.tokenize_messages(messages)
            room = self.context_length - len(tokens)
            if room <= 0:
                raise GenerationError(
                    f"prompt is {len(tokens)} tokens; the context holds {self.context_length}"
                )
            wanted = self._config.max_tokens if max_tokens is None else max_tokens
            limit = max(1, min(wanted, room))
            # Without an explicit seed llama-cpp-python reuses one fixed seed
            # for every call, so identical prompts would get identical replies.
            seed = self._config.seed if self._config.seed is not None else random.getrandbits(31)
            if self.prefix_cache is not None:
                self.prefix_cache.restore(llm, tokens)
            watch = _progress_hook(llm, tokens, stops, on_progress) if on_progress is not None else None
            try:
                result: Any = llm.create_completion(
                    prompt=tokens,
                    max_tokens=limit,
                    temperature=self._config.temperature,
                    top_k=DEFAULT_TOP_K,
                    top_p=DEFAULT_TOP_P,
                    repeat_penalty=DEFAULT_REPEAT_PENALTY,
                    stop=stops,
                    seed=seed,
                    stream=False,
                    grammar=grammar,
                    stopping_criteria=watch,
                )
            except Exception as exc:
                raise GenerationError(f"llama.cpp generation failed: {exc}") from exc
            if self.prefix_cache is not None:
                self.prefix_cache.save(llm)
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        finish = choice.get("finish_reason") or "stop"
        return Completion(
            text=str(choice.get("text") or "").strip(),
            prompt_tokens=int(usage.get("prompt_tokens", len(tokens))),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason="length" if finish == "length" else "stop",
        )

    def _grammar(self, schema: dict[str, Any]) -> Any:
        """llama.cpp's GBNF grammar for ``schema``, compiled once per schema (routing reuses few)."""
        key = json.dumps(grammar_schema(schema), sort_keys=True)
        if key not in self._grammars:
            from llama_cpp import LlamaGrammar

            try:
                self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception as exc:
                raise GenerationError(f"cannot turn the JSON schema into a grammar: {exc}") from exc
        return self._grammars[key]

    def close(self) -> None:
        """Free the model now rather than at garbage collection (workers recycle)."""
        with self._lock:
            llm, self._llm = self._llm, None
        if llm is not None:
            llm.close()


@dataclass(frozen=True)
class VocabTokens:
    """The vocabulary's special tokens as llama.cpp itself marks them (it promotes some end-of-turn tokens a file
    leaves unmarked)."""

    control: dict[str, int]  # control and unknown: parsed only with special-token parsing on
    user_defined: dict[str, int]  # matched in any text, parsing on or off
    lstrip: frozenset[int]  # llama.cpp eats the whitespace before these ...
    rstrip: frozenset[int]  # ... and after these


def vocab_tokens(llm: Llama) -> VocabTokens:
    """One pass over the vocabulary's token attributes (~0.1 s for 49k tokens)."""
    import llama_cpp

    vocab = llm._model.vocab
    control: dict[str, int] = {}
    user_defined: dict[str, int] = {}
    lstrip: set[int] = set()
    rstrip: set[int] = set()
    for i in range(llama_cpp.llama_vocab_n_tokens(vocab)):
        attr = int(llama_cpp.llama_vocab_get_attr(vocab, i))
        if attr & (llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN):
            kind = control
        elif attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED:
            kind = user_defined
        else:
            continue
        text = llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", errors="replace")
        if text:
            kind.setdefault(text, i)
        if attr & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP:
            lstrip.add(i)
        if attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP:
            rstrip.add(i)
    return VocabTokens(control, user_defined, frozenset(lstrip), frozenset(rstrip))


def _progress_hook(llm: Llama, prompt: list[int], stops: list[str], on_progress: Progress) -> Any:
    """A stopping criterion that never stops: it hands ``on_progress`` a decoder of the text so far.

    llama-cpp-python calls it once per token with the evaluated ids (prompt + reply minus the newest
    token); decoding happens only when ``on_progress`` asks, i.e. when a partial is due.
    """
    from llama_cpp import StoppingCriteriaList

    start = len(prompt)

    def watch(input_ids: Any, _logits: Any) -> bool:
        def text() -> str:
            generated = [int(t) for t in input_ids[start:]]
            raw = llm.detokenize(generated, prev_tokens=prompt) if generated else b""
            return hold_back_stop(raw.decode("utf-8", errors="ignore"), stops)

        on_progress(text)
        return False

    return StoppingCriteriaList([watch])


# Keywords llama.cpp's JSON-schema-to-grammar converter mistranslates: a ``pattern`` such as ``^\d{4}-\d{2}$``
# became a grammar its parser refuses ("unknown escape"), and sampling with it then crashed the process (SIGSEGV,
# the converter helper's schema). The constraint is kept for the output's shape; the arguments are validated
# against the helper's full schema after generation (core_worker/routing.py), as for backends without grammars.
UNGRAMMATICAL_KEYWORDS = frozenset({"pattern", "patternProperties", "format"})
# A bound becomes that many repetitions of a rule, and llama.cpp's parser refuses a grammar past ~2,000 of them
# ("exceeds sane defaults"), and its parser then crashes the process (SIGSEGV inside llama_sampler_init_grammar,
# so no check beforehand helps): the example wordcount helper's ``maxLength: 1000000`` did it on every routed
# message. Bounds above GRAMMAR_MAX_REPEAT (1,000 parsed, 2,000 crashed) are left to validation after generation.
GRAMMAR_MAX_REPEAT = 500
_REPEAT_BOUNDS = frozenset({"minLength", "maxLength", "minItems", "maxItems"})
_NAMED_SUBSCHEMAS = frozenset({"properties", "$defs", "definitions", "dependentSchemas"})


def grammar_schema(schema: Any, *, names: bool = False) -> Any:
    """``schema`` without the keywords llama.cpp cannot turn into a grammar (property names kept as they are)."""
    if isinstance(schema, list):
        return [grammar_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if names:  # a mapping of names to subschemas: a property called "pattern" is not the keyword
        return {name: grammar_schema(sub) for name, sub in schema.items()}
    return {key: grammar_schema(value, names=key in _NAMED_SUBSCHEMAS)
            for key, value in schema.items() if key not in UNGRAMMATICAL_KEYWORDS and not _too_many(key, value)}


def _too_many(key: str, value: Any) -> bool:
    return key in _REPEAT_BOUNDS and isinstance(value, int) and value > GRAMMAR_MAX_REPEAT
