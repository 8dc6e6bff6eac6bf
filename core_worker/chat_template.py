"""Turn a conversation into the exact prompt text a GGUF model was trained on.

We render prompts ourselves (instead of letting each library do it) so that
llama_cpp and ctransformers see byte-identical prompts, and so ctransformers,
which knows nothing about chat templates, still gets a correct one.

Preference order: the file's own ``tokenizer.chat_template`` (Jinja2, as on
Hugging Face), else a built-in template for the model family guessed from
``general.architecture`` / ``general.name`` / the special tokens.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn, Protocol

import jinja2
import numpy as np
from gguf import GGUF_MAGIC, GGMLQuantizationType, GGUFValueType
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "FAMILIES",
    "ChatTemplate",
    "ChatTemplateError",
    "GGUFInfo",
    "GGUFReadError",
    "MessageLike",
    "fallback_template",
    "guess_family",
    "load_chat_template",
    "read_gguf_info",
    "template_for_model",
]

log = logging.getLogger(__name__)

# gguf.TokenType values of the tokens llama.cpp parses as special.
_TOKEN_UNKNOWN = 2
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4


class GGUFReadError(ValueError):
    """The file is missing or is not a GGUF we can read."""


class ChatTemplateError(ValueError):
    """A template failed to compile or render (including its own ``raise_exception``)."""


class MessageLike(Protocol):
    """Anything with ``role`` and ``content``; ChatMessage fits, so this module needs no LLM import."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...


Message = MessageLike | Mapping[str, str]


@dataclass(frozen=True)
class GGUFInfo:
    """The metadata the backends need, read once without loading weights."""

    path: str
    version: int
    architecture: str
    name: str
    context_length: int | None
    chat_template: str | None
    tokenizer_model: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    bos_token: str
    eos_token: str
    add_bos_token: bool
    vocab_size: int
    # Text of control / user-defined / unknown tokens -> id: the pieces
    # llama.cpp matches verbatim in a prompt when parse_special is on.
    special_tokens: Mapping[str, int] = field(default_factory=dict)
    # The control and unknown ones among them: what llama.cpp matches only with parse_special on, and so the
    # tokens only a chat template may write (user-defined tokens are matched in any text).
    control_tokens: Mapping[str, int] = field(default_factory=dict)
    tensor_names: frozenset[str] = frozenset()
    tensor_types: frozenset[str] = frozenset()


_SCALARS: dict[int, tuple[str, str]] = {
    # value type -> (struct format, numpy dtype)
    GGUFValueType.UINT8: ("<B", "<u1"),
    GGUFValueType.INT8: ("<b", "<i1"),
    GGUFValueType.UINT16: ("<H", "<u2"),
    GGUFValueType.INT16: ("<h", "<i2"),
    GGUFValueType.UINT32: ("<I", "<u4"),
    GGUFValueType.INT32: ("<i", "<i4"),
    GGUFValueType.FLOAT32: ("<f", "<f4"),
    GGUFValueType.BOOL: ("<?", "<u1"),
    GGUFValueType.UINT64: ("<Q", "<u8"),
    GGUFValueType.INT64: ("<q", "<i8"),
    GGUFValueType.FLOAT64: ("<d", "<f8"),
}
_WANTED_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type")


class _Parser:
    """Just enough of a GGUF v2/v3 reader for metadata and tensor names/types.

    gguf.GGUFReader builds a numpy object per array element: ~1 s for a 32k
    vocabulary, ~6.5 s for Qwen's 152k, paid by every worker at start-up.
    Walking the header ourselves takes milliseconds; tests cross-check the
    result against GGUFReader.
    """

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.off = 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.off)[0]
        self.off += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        start = self.off
        self.off += n
        return bytes(self.buf[start:self.off]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.off += 8 + struct.unpack_from("<Q", self.buf, self.off)[0]

    def value(self, vtype: int, key: str) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype][0])
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype != GGUFValueType.ARRAY:
            raise GGUFReadError(f"unknown GGUF value type {vtype} for key {key!r}")
        etype = self.unpack("<I")
        count = self.unpack("<Q")
        wanted = key in _WANTED_ARRAYS
        if etype == GGUFValueType.STRING:
            offsets: list[int] = []
            for _ in range(count):
                if wanted:
                    offsets.append(self.off)
                self.skip_string()
            return offsets if wanted else None
        if etype in _SCALARS:
            fmt, dtype = _SCALARS[etype]
            start = self.off
            self.off += struct.calcsize(fmt) * count
            if wanted:
                return np.frombuffer(self.buf, dtype=dtype, count=count, offset=start).tolist()
            return None
        for _ in range(count):  # nested arrays: walk and drop
            self.value(etype, "")
        return None

    def string_at(self, offset: int) -> str:
        self.off = offset
        return self.string()


def read_gguf_info(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read metadata without loading weights.

    Raises GGUFReadError for a missing, truncated or non-GGUF file, and for
    GGUF v1 (which would crash ctransformers) or big-endian files.
    """
    p = Path(path)
    if not p.is_file():
        raise GGUFReadError(f"model file not found: {p}")
    try:
        with open(p, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(p, buf)
    except GGUFReadError:
        raise
    except (OSError, ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        raise GGUFReadError(f"{p} is not a readable GGUF file: {exc}") from exc


def _parse(p: Path, buf: mmap.mmap) -> GGUFInfo:
    r = _Parser(buf)
    if len(buf) < 24 or r.unpack("<I") != GGUF_MAGIC:
        raise GGUFReadError(f"{p} is not a GGUF file (bad magic)")
    version = r.unpack("<I")
    if version & 0xFFFF == 0:
        raise GGUFReadError(f"{p} is a big-endian GGUF; only little-endian files are supported")
    if version < 2:
        raise GGUFReadError(f"{p} is GGUF v{version}; v1 files are not supported (re-convert the model)")
    n_tensors = r.unpack("<Q")
    n_kv = r.unpack("<Q")
    kv: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        kv[key] = r.value(r.unpack("<I"), key)
    tensor_names: set[str] = set()
    tensor_types: set[str] = set()
    for _ in range(n_tensors):
        tensor_names.add(r.string())
        n_dims = r.unpack("<I")
        r.off += 8 * n_dims
        ttype = r.unpack("<I")
        r.off += 8  # data offset
        try:
            tensor_types.add(GGMLQuantizationType(ttype).name)
        except ValueError:
            tensor_types.add(f"type{ttype}")

    token_offsets: list[int] = kv.get("tokenizer.ggml.tokens") or []
    types: list[int] = kv.get("tokenizer.ggml.token_type") or []
    vocab_size = len(token_offsets)

    def token_text(idx: Any) -> str:
        if not isinstance(idx, int) or not 0 <= idx < vocab_size:
            return ""
        return r.string_at(token_offsets[idx])

    special: dict[str, int] = {}
    control: dict[str, int] = {}
    for idx, kind in enumerate(types[:vocab_size]):
        if kind in (_TOKEN_UNKNOWN, _TOKEN_CONTROL, _TOKEN_USER_DEFINED):
            text = token_text(idx)
            if text:
                special.setdefault(text, idx)
                if kind != _TOKEN_USER_DEFINED:
                    control.setdefault(text, idx)

    arch = str(kv.get("general.architecture") or "")
    tok_model = kv.get("tokenizer.ggml.model")
    add_bos = kv.get("tokenizer.ggml.add_bos_token")
    if add_bos is None:  # llama.cpp's default: SentencePiece vocabularies add BOS
        add_bos = tok_model == "llama"
    ctx = kv.get(f"{arch}.context_length") if arch else None
    template = kv.get("tokenizer.chat_template")
    bos_id = kv.get("tokenizer.ggml.bos_token_id")
    eos_id = kv.get("tokenizer.ggml.eos_token_id")
    return GGUFInfo(
        path=str(p),
        version=int(version),
        architecture=arch,
        name=str(kv.get("general.name") or ""),
        context_length=int(ctx) if isinstance(ctx, int) else None,
        chat_template=template if isinstance(template, str) and template else None,
        tokenizer_model=str(tok_model) if tok_model is not None else None,
        bos_token_id=int(bos_id) if isinstance(bos_id, int) else None,
        eos_token_id=int(eos_id) if isinstance(eos_id, int) else None,
        bos_token=token_text(bos_id),
        eos_token=token_text(eos_id),
        add_bos_token=bool(add_bos),
        vocab_size=vocab_size,
        special_tokens=special,
        control_tokens=control,
        tensor_names=frozenset(tensor_names),
        tensor_types=frozenset(tensor_types),
    )


# --------------------------------------------------------------------------
# Fallback templates, one per family, in the same Jinja dialect as HF's.

_LLAMA2 = """\
{%- set ns = namespace(system=none) -%}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}
    {%- set ns.system = message['content'] if ns.system is none else ns.system + '\\n\\n' + message['content'] -%}
  {%- elif message['role'] == 'user' -%}
    {%- if ns.system is not none -%}
      {{ bos_token + '[INST] <<SYS>>\\n' + ns.system + '\\n<</SYS>>\\n\\n' + message['content'] + ' [/INST]' }}
      {%- set ns.system = none -%}
    {%- else -%}
      {{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}
    {%- endif -%}
  {%- elif message['role'] == 'assistant' -%}
    {{ ' ' + message['content'] + ' ' + eos_token }}
  {%- else -%}
    {{ raise_exception('Unknown role: ' + message['role']) }}
  {%- endif -%}
{%- endfor -%}
"""

_MISTRAL = """\
{%- set ns = namespace(system=none) -%}
{{ bos_token }}
{%- for message in messages -%}
  {%- if message['role'] == 'system' -%}
    {%- set ns.system = message['content'] if ns.system is none else ns.system + '\\n\\n' + message['content'] -%}
  {%- elif message['role'] == 'user' -%}
    {%- if ns.system is not none -%}
      {{ '[INST] ' + ns.system + '\\n\\n' + message['content'] + ' [/INST]' }}
      {%- set ns.system = none -%}
    {%- else -%}
      {{ '[INST] ' + message['content'] + ' [/INST]' }}
    {%- endif -%}
  {%- elif message['role'] == 'assistant' -%}
    {{ message['content'] + eos_token }}
  {%- else -%}
    {{ raise_exception('Unknown role: ' + message['role']) }}
  {%- endif -%}
{%- endfor -%}
"""

_CHATML = """\
{%- for message in messages -%}
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|im_start|>assistant\\n' }}
{%- endif -%}
"""

_ZEPHYR = """\
{%- for message in messages -%}
{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|assistant|>\\n' }}
{%- endif -%}
"""

_LLAMA3 = """\
{{ bos_token }}
{%- for message in messages -%}
{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif -%}
"""

_FALLBACKS: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    # family: (template, end-of-turn / next-turn markers, default bos, default eos)
    "llama-2": (_LLAMA2, ("</s>", "[INST]"), "<s>", "</s>"),
    "chatml": (_CHATML, ("<|im_end|>", "<|im_start|>", "<|endoftext|>"), "", "<|im_end|>"),
    "zephyr": (_ZEPHYR, ("</s>", "<|user|>", "<|system|>", "<|assistant|>"), "<s>", "</s>"),
    "llama-3": (
        _LLAMA3,
        ("<|eot_id|>", "<|start_header_id|>", "<|end_of_text|>"),
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    "mistral": (_MISTRAL, ("</s>", "[INST]"), "<s>", "</s>"),
}
FAMILIES: tuple[str, ...] = tuple(_FALLBACKS)

# Markers that end an assistant turn or start the next one, looked for in a
# file's own template to derive stop strings for it.
_KNOWN_MARKERS = (
    "<|im_end|>",
    "<|im_start|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end|>",
    "<|user|>",
    "<|system|>",
    "<|assistant|>",
    "[INST]",
    "<end_of_turn>",
    "<start_of_turn>",
    "<|endoftext|>",
)


def _raise_exception(message: str) -> NoReturn:
    """HF templates call this to reject a conversation (e.g. non-alternating roles)."""
    raise jinja2.TemplateError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    """HF's tojson: no HTML escaping, non-ASCII kept (Jinja's builtin escapes both)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    """Used by Llama-3.1-style templates for the date line."""
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    """Sandboxed (templates come from downloaded files) and configured like transformers'."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"chat template does not compile: {exc}") from exc


def _as_dict(message: Message) -> dict[str, str]:
    if isinstance(message, Mapping):
        return {"role": str(message["role"]), "content": str(message["content"])}
    return {"role": message.role, "content": message.content}


def _merge_system(messages: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """Fold system messages into the first user turn, for templates that reject a system role."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    if not system:
        return None
    rest = [dict(m) for m in messages if m["role"] != "system"]
    prefix = "\n\n".join(system)
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{prefix}\n\n{m['content']}"
            return rest
    return [{"role": "user", "content": prefix}, *rest]


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled-on-demand chat template plus the stop strings that end a reply."""

    source: str
    origin: str  # "gguf" (the file's own) | "fallback"
    family: str  # one of FAMILIES, or "custom" for an unrecognised file template
    bos_token: str
    eos_token: str
    stop: tuple[str, ...]

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """Render the conversation; retries with the system prompt folded into the first
        user turn when the template rejects system messages (Mistral/Gemma style)."""
        dicts = [_as_dict(m) for m in messages]
        try:
            return self._render(dicts, add_generation_prompt)
        except ChatTemplateError:
            merged = _merge_system(dicts)
            if merged is None:
                raise
            log.debug("chat template rejected the system role; folding it into the first user turn")
            return self._render(merged, add_generation_prompt)

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        template = _compile(self.source)
        try:
            return template.render(
                messages=messages,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
            )
        except jinja2.TemplateError as exc:  # includes raise_exception and sandbox SecurityError
            raise ChatTemplateError(f"chat template failed to render: {exc}") from exc


def _markers_in(source: str) -> tuple[str, ...]:
    return tuple(m for m in _KNOWN_MARKERS if m in source)


def _family_of_source(source: str) -> str:
    if "<|start_header_id|>" in source:
        return "llama-3"
    if "<|im_start|>" in source:
        return "chatml"
    if "<<SYS>>" in source:
        return "llama-2"
    if "[INST]" in source:
        return "mistral"
    if "<|user|>" in source or "'<|' + message['role'] + '|>" in source:
        return "zephyr"
    return "custom"


def guess_family(architecture: str, name: str, special_tokens: Mapping[str, int] | Sequence[str] = ()) -> str:
    """Pick a fallback family when a file carries no template.

    Special tokens are the strongest evidence (a file can't use ChatML without
    ``<|im_start|>``), then the model name, then the architecture; an unknown
    llama-architecture model gets llama-2, anything else ChatML (the most
    common format among current instruction-tuned models).
    """
    arch = architecture.lower()
    lname = name.lower()
    tokens = set(special_tokens)
    if {"<|start_header_id|>", "<|eot_id|>"} & tokens or "llama-3" in lname or "llama3" in lname:
        return "llama-3"
    if "<|im_start|>" in tokens or arch.startswith("qwen") or any(
        key in lname for key in ("qwen", "chatml", "hermes", "dolphin")
    ):
        return "chatml"
    if "tinyllama" in lname or "zephyr" in lname:
        return "zephyr"
    if "mistral" in lname or "mixtral" in lname or arch in ("mistral", "mixtral"):
        return "mistral"
    if "llama-2" in lname or "llama2" in lname or arch == "llama":
        return "llama-2"
    return "chatml"


def fallback_template(family: str, *, bos_token: str | None = None, eos_token: str | None = None) -> ChatTemplate:
    """The built-in template for ``family``; bos/eos default to the family's usual tokens."""
    try:
        source, markers, default_bos, default_eos = _FALLBACKS[family]
    except KeyError:
        raise ChatTemplateError(f"unknown template family {family!r}; known: {', '.join(FAMILIES)}") from None
    bos = default_bos if bos_token is None else bos_token
    eos = default_eos if eos_token is None else eos_token
    stop = tuple(dict.fromkeys(s for s in (*markers, eos) if s))
    return ChatTemplate(source=source, origin="fallback", family=family, bos_token=bos, eos_token=eos, stop=stop)


def template_for_model(info: GGUFInfo) -> ChatTemplate:
    """The file's own template if it compiles, else the guessed family's fallback."""
    if info.chat_template:
        try:
            _compile(info.chat_template)
        except ChatTemplateError as exc:
            log.warning("%s: ignoring the file's chat template (%s); using a fallback", info.path, exc)
        else:
            stop = tuple(dict.fromkeys(s for s in (*_markers_in(info.chat_template), info.eos_token) if s))
            return ChatTemplate(
                source=info.chat_template,
                origin="gguf",
                family=_family_of_source(info.chat_template),
                bos_token=info.bos_token,
                eos_token=info.eos_token,
                stop=stop,
            )
    family = guess_family(info.architecture, info.name, info.special_tokens)
    # Only override the family's bos/eos with the file's when the file has them.
    return fallback_template(family, bos_token=info.bos_token or None, eos_token=info.eos_token or None)


def load_chat_template(path: str | os.PathLike[str]) -> ChatTemplate:
    """Read a GGUF's metadata and return the template to use for it."""
    return template_for_model(read_gguf_info(path))
