"""llama-cpp-python backend: the default local engine.

We render the chat prompt ourselves (core_worker.chat_template) and feed its
token ids to our own batch engine (core_worker/llm/batch_engine.py) over
llama-cpp-python's low-level API, so this backend and the ctransformers one
run on byte-identical prompts, and several conversations share one decode.  Only the template's own control
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
from typing import Any

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
    conversation_owner,
    effective_context,
    merge_stops,
    read_model,
)
from .batch_engine import BatchEngine, Job, Sampling, run_job, set_fields
from .prefix_cache import PrefixCache, common_prefix
from .prompt_pieces import Piece, PromptSplitter, pieces_text, strip_around, template_tokens, token_ids

__all__ = ["LlamaCppBackend", "VocabTokens", "grammar_schema", "vocab_tokens"]

log = logging.getLogger(__name__)


class LlamaCppBackend:
    """One llama.cpp model serving up to ``config.parallel`` conversations at once (core_worker/llm/batch_engine.py).

    ``chat`` may be called from several threads: each call is a job of the engine's batch.  Tokenizing reads
    only the vocabulary, which llama.cpp never changes after load, so it needs no lock."""

    name = "llama_cpp"
    constrains_json = True
    streams = True  # ``chat(on_progress=…)`` reports the text as it is generated
    parallel_safe = True  # ``chat`` from several threads at once: they are batched

    def __init__(self, config: BackendConfig) -> None:
        info = read_model(config.model_path)
        self._config = config
        self.info = info
        self.template: ChatTemplate = template_for_model(info)
        self.context_length = effective_context(config.n_ctx, info.context_length)
        self.parallel = max(1, config.parallel)
        self._grammars: dict[str, str] = {}
        self._system_tokens: dict[str, list[int]] = {}  # a system prompt's tokens, rendered alone
        self._grammar_lock = threading.Lock()
        try:
            import llama_cpp
            from llama_cpp._internals import LlamaModel
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelLoadError(f"llama-cpp-python is not installed: {exc}") from exc
        _quiet_llama_cpp()
        load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if config.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        params = set_fields(llama_cpp.llama_model_default_params(), n_gpu_layers=0, load_mode=load_mode)
        try:
            model = LlamaModel(path_model=info.path, params=params, verbose=False)
        except Exception as exc:  # llama-cpp-python raises ValueError/RuntimeError with little detail
            raise ModelLoadError(f"llama.cpp failed to load {info.path}: {exc}") from exc
        self._model: Any = model
        vocab = vocab_tokens(model)
        self._lstrip, self._rstrip = vocab.lstrip, vocab.rstrip
        self._splitter = PromptSplitter(vocab.control)
        forgeable = template_tokens(self.template, vocab.user_defined)
        if forgeable:
            log.warning(
                "%s types the chat template's markers %s as user-defined tokens, which llama.cpp matches in any "
                "text: a message containing them can still open a turn (a current conversion of the model marks "
                "them control; ctransformers treats them as the template's)", info.path, ", ".join(sorted(forgeable))
            )
        self._bos: int | None = model.token_bos() if model.add_bos_token() else None
        try:
            self._engine: BatchEngine | None = BatchEngine(
                model, parallel=self.parallel, n_ctx_seq=self.context_length, n_threads=config.n_threads,
                prefill_chunk=config.prefill_chunk, snapshot_bytes=config.prompt_cache_bytes,
                detokenize=lambda ids: bytes(model.detokenize(ids, special=False)),
            )
        except GenerationError as exc:
            model.close()
            raise ModelLoadError(str(exc)) from exc

    # -- helpers ---------------------------------------------------------------
    def _engine_or_fail(self) -> BatchEngine:
        if self._engine is None:
            raise GenerationError("backend is closed")
        return self._engine

    @property
    def prefix_cache(self) -> PrefixCache | None:
        """The engine's snapshots of conversations whose slot was given away (None when off)."""
        return self._engine.snapshots if self._engine is not None else None

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
        model = self._model
        return token_ids(pieces, lambda text: list(model.tokenize(text.encode("utf-8"), add_bos=False, special=False)),
                         self._bos)

    # -- LLMBackend ------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (no BOS, special-token text counted as text)."""
        if not text:
            return 0
        self._engine_or_fail()
        return len(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
        on_progress: Progress | None = None,
    ) -> Completion:
        """The reply; with ``on_progress`` the text so far is offered after every token, and whatever it
        raises cancels the generation (the caller's lease was lost) and is raised here."""
        engine = self._engine_or_fail()
        grammar = self._grammar(json_schema) if json_schema is not None else None
        tokens = self.tokenize_messages(messages)
        room = self.context_length - len(tokens)
        if room <= 0:
            raise GenerationError(f"prompt is {len(tokens)} tokens; the context holds {self.context_length}")
        wanted = self._config.max_tokens if max_tokens is None else max_tokens
        # Without an explicit seed every call gets its own, so identical prompts get different replies.
        seed = self._config.seed if self._config.seed is not None else random.getrandbits(31)
        job = Job(tokens=tokens, max_tokens=max(1, min(wanted, room)), grammar=grammar,
                  stops=merge_stops(self.template.stop, stop), owner=conversation_owner(),
                  public=self._public_prefix(messages, tokens),
                  sampling=Sampling(temperature=self._config.temperature, top_k=DEFAULT_TOP_K, top_p=DEFAULT_TOP_P,
                                    repeat_penalty=DEFAULT_REPEAT_PENALTY, seed=seed))
        result = run_job(engine, job, on_progress=on_progress)
        return Completion(text=result.text.strip(), prompt_tokens=result.prompt_tokens,
                          completion_tokens=result.completion_tokens, finish_reason=result.finish_reason)

    def _public_prefix(self, messages: Sequence[ChatMessage], tokens: list[int]) -> int:
        """How many of ``tokens`` are the system prompt's, which every conversation shares."""
        if not messages or messages[0].role != "system":
            return 0
        with self._grammar_lock:
            system = self._system_tokens.get(messages[0].content)
        if system is None:
            system = self.tokenize_messages([messages[0]])
            with self._grammar_lock:
                if len(self._system_tokens) > 16:
                    self._system_tokens.clear()
                self._system_tokens[messages[0].content] = system
        return common_prefix(system, tokens)

    def _grammar(self, schema: dict[str, Any]) -> str:
        """llama.cpp's GBNF grammar for ``schema``, converted once per schema (routing reuses few)."""
        key = json.dumps(grammar_schema(schema), sort_keys=True)
        with self._grammar_lock:
            if key not in self._grammars:
                from llama_cpp import LlamaGrammar

                try:
                    self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)._grammar
                except Exception as exc:
                    raise GenerationError(f"cannot turn the JSON schema into a grammar: {exc}") from exc
            return self._grammars[key]

    def close(self) -> None:
        """Free the model now rather than at garbage collection (workers recycle)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
            self._model.close()


def _quiet_llama_cpp() -> None:
    """llama.cpp logs every load and context to stderr; only its errors are worth a worker's log."""
    try:
        from llama_cpp._logger import set_verbose
    except ImportError:  # pragma: no cover - depends on the version
        return
    set_verbose(False)


@dataclass(frozen=True)
class VocabTokens:
    """The vocabulary's special tokens as llama.cpp itself marks them (it promotes some end-of-turn tokens a file
    leaves unmarked)."""

    control: dict[str, int]  # control and unknown: parsed only with special-token parsing on
    user_defined: dict[str, int]  # matched in any text, parsing on or off
    lstrip: frozenset[int]  # llama.cpp eats the whitespace before these ...
    rstrip: frozenset[int]  # ... and after these


def vocab_tokens(model: Any) -> VocabTokens:
    """One pass over the vocabulary's token attributes (~0.1 s for 49k tokens); ``model`` is a LlamaModel."""
    import llama_cpp

    vocab = model.vocab
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
