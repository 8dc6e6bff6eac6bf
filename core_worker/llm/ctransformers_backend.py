"""ctransformers backend: the fallback local engine (prebuilt wheels, no compiler).

ctransformers 0.2.27 bundles a 2023 llama.cpp, so this module works around its
gaps: it only runs llama-family GGUF files with SentencePiece vocabularies,
defaults to a 512-token context, takes a missing path for a Hugging Face repo
name, crashes on GGUF v1 and fails opaquely on BF16 or tied-embedding files.
All of those are checked up front and turned into ModelLoadError.  Its
tokenizer cannot parse special-token text, so the template's own control
tokens are inserted as ids here (core_worker.llm.prompt_pieces); all other
text, messages included, is tokenized as text, split only on user-defined
tokens, as llama.cpp does with special-token parsing off.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

from core_worker.chat_template import ChatTemplate, GGUFInfo, template_for_model

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
    apply_stop,
    effective_context,
    hold_back_stop,
    merge_stops,
    read_model,
)
from .prompt_pieces import Piece, PromptSplitter, pieces_text, template_tokens, token_ids

__all__ = ["SUPPORTED_TENSOR_TYPES", "CTransformersBackend", "check_supported", "cpu_library"]

# Tensor types the bundled (Sept 2023) llama.cpp can compute with.
SUPPORTED_TENSOR_TYPES = frozenset(
    {"F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}
)


@lru_cache(maxsize=1)
def cpu_library(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """Which prebuilt ctransformers library fits this CPU.

    ctransformers' own detection (py-cpuinfo) costs ~1.1 s per load; reading the
    flags line ourselves is instant.  None (not Linux) lets ctransformers detect.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    if "avx2" in flags:
        return "avx2"
    if "avx" in flags and "f16c" in flags:  # the same rule ctransformers applies
        return "avx"
    return "basic"


def check_supported(info: GGUFInfo) -> None:
    """Raise ModelLoadError for files the bundled llama.cpp would crash or fail on."""
    where = info.path
    if info.architecture != "llama":
        raise ModelLoadError(
            f"ctransformers runs only llama-family GGUF models; {where} is {info.architecture or 'unknown'!r} "
            "(use LLM_BACKEND=llama_cpp)"
        )
    if info.version < 2:
        raise ModelLoadError(f"{where} is GGUF v{info.version}; ctransformers needs v2 or later")
    if info.tokenizer_model != "llama":
        raise ModelLoadError(
            f"{where} has a {info.tokenizer_model!r} tokenizer; ctransformers handles SentencePiece ('llama') only"
        )
    if "output.weight" not in info.tensor_names:
        raise ModelLoadError(f"{where} ties its output to the token embedding; ctransformers needs an output tensor")
    unsupported = sorted(info.tensor_types - SUPPORTED_TENSOR_TYPES)
    if unsupported:
        raise ModelLoadError(f"{where} uses tensor types ctransformers cannot run: {', '.join(unsupported)}")


class CTransformersBackend:
    """One ctransformers model, serialised by a lock (the model is not thread-safe)."""

    name = "ctransformers"
    constrains_json = False
    streams = True  # ``chat(on_progress=…)`` reports the text as it is generated

    def __init__(self, config: BackendConfig) -> None:
        info = read_model(config.model_path)
        check_supported(info)
        self._config = config
        self.info = info
        self.template: ChatTemplate = template_for_model(info)
        self.context_length = effective_context(config.n_ctx, info.context_length)
        self._lock = threading.RLock()
        user_defined = {t: i for t, i in info.special_tokens.items() if t not in info.control_tokens}
        # A file that types its turn markers user-defined (2023 conversions did): still the template's alone.
        markers = template_tokens(self.template, user_defined)
        self._splitter = PromptSplitter({**info.control_tokens, **markers})
        # llama.cpp matches the other user-defined tokens even with special-token parsing off; so do we, in any text.
        self._user_defined = PromptSplitter({t: i for t, i in user_defined.items() if t not in markers})
        try:
            from ctransformers import LLM, Config
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelLoadError(f"ctransformers is not installed: {exc}") from exc
        ct_config = Config(
            context_length=self.context_length,  # else 512, whatever the file says
            threads=config.n_threads,
            mmap=config.use_mmap,
            gpu_layers=0,
        )
        try:
            self._llm: Any = LLM(info.path, "gguf", config=ct_config, lib=cpu_library())
        except Exception as exc:  # "Failed to create LLM ..." carries no reason
            raise ModelLoadError(f"ctransformers failed to load {info.path}: {exc}") from exc

    def _model(self) -> Any:
        if self._llm is None:
            raise GenerationError("backend is closed")
        return self._llm

    def prompt_pieces(self, messages: Sequence[ChatMessage]) -> list[Piece]:
        """The prompt as the template's control tokens and text (public so tests can look inside)."""
        return self._splitter.pieces(self.template, messages)

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The exact prompt text sent to the model (public so tests can compare backends)."""
        return pieces_text(self.prompt_pieces(messages))

    def tokenize_messages(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Tokenize like llama.cpp: the template's control tokens as their ids, every other text, messages
        included, as text (each run on its own, as llama.cpp does between tokens); BOS unless the template
        wrote it."""
        pieces = self.prompt_pieces(messages)
        with self._lock:
            llm = self._model()
            bos = llm.bos_token_id if self.info.add_bos_token else None

            def text_ids(text: str) -> list[int]:
                return token_ids(self._user_defined.split(text), lambda t: llm.tokenize(t, add_bos_token=False), None)

            return token_ids(pieces, text_ids, bos)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text (no BOS, special-token text counted as text)."""
        if not text:
            return 0
        with self._lock:
            return len(self._model().tokenize(text, add_bos_token=False))

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,  # not enforceable here: callers validate
        on_progress: Progress | None = None,
    ) -> Completion:
        """The reply; with ``on_progress`` the text so far is offered after every token (this loop
        already decodes it per token, so reporting costs a function call)."""
        stops = merge_stops(self.template.stop, stop)
        with self._lock:
            llm = self._model()
            tokens = self.tokenize_messages(messages)
            room = self.context_length - len(tokens)
            if room <= 0:
                raise GenerationError(f"prompt is {len(tokens)} tokens; the context holds {self.context_length}")
            wanted = self._config.max_tokens if max_tokens is None else max_tokens
            limit = max(1, min(wanted, room))  # ctransformers only warns past the context; we must not get there
            seed = self._config.seed if self._config.seed is not None else random.getrandbits(31)
            out = bytearray()
            count = 0
            finish = "stop"  # the generator ends by itself only on EOS
            text = ""
            try:
                for token in llm.generate(
                    tokens,
                    top_k=DEFAULT_TOP_K,
                    top_p=DEFAULT_TOP_P,
                    temperature=self._config.temperature,
                    repetition_penalty=DEFAULT_REPEAT_PENALTY,
                    seed=seed,
                    threads=self._config.n_threads,
                    reset=True,  # re-uses the evaluated common prefix, like llama.cpp's cache
                ):
                    count += 1
                    out += llm.detokenize([token], decode=False)
                    text, hit = apply_stop(out.decode("utf-8", errors="ignore"), stops)
                    if hit:
                        break
                    if count >= limit:
                        finish = "length"
                        break
                    if on_progress is not None:
                        on_progress(partial(hold_back_stop, text, stops))
            except Exception as exc:
                raise GenerationError(f"ctransformers generation failed: {exc}") from exc
        return Completion(text=text.strip(), prompt_tokens=len(tokens), completion_tokens=count, finish_reason=finish)

    def close(self) -> None:
        """Drop the model; ctransformers frees it when the object is collected."""
        with self._lock:
            self._llm = None
