"""Write random-weight llama-architecture GGUF models, for tests and benchmarks.

No model can be downloaded at test time, so we fabricate one: a real
SentencePiece BPE tokenizer trained in-process on generated text, a chat
template, and random weights in the exact tensor layout llama.cpp and
ctransformers expect.  Replies are gibberish, but every code path (template,
tokenizer, sampling, stop handling) is real.

Two shapes:

* ``tiny``: 2 layers, 128 wide, ~2,000-piece vocab; < 5 MB, hundreds of tok/s.
* ``tinyllama-1.1b``: TinyLlama's exact shape (22 layers, 2048 wide, 32,000
  vocab, ~1.1B parameters) for realistic speed and memory benchmarks.  In
  Q4_0 the blocks are written straight from random bytes, so it takes seconds.

CLI: ``python -m core_worker.tiny_model OUT.gguf [--shape tiny|tinyllama-1.1b]
[--quant f32|f16|q4_0] [--seed N]``; prints the written path on stdout.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "QUANTS",
    "SHAPES",
    "TINY_CHAT_TEMPLATE",
    "ModelShape",
    "TokenizerData",
    "main",
    "parameter_count",
    "train_tokenizer",
    "write_tiny_model",
]

# TinyLlama-1.1B-Chat's own template (zephyr style), so the file-template code
# path is exercised with a real-world template.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)

QUANTS = ("f32", "f16", "q4_0")

# The corpus is fixed (not derived from --seed) so every tiny model shares one
# tokenizer; --seed only changes the weights.
_CORPUS_SEED = 20240601
_TOKENIZER_VOCAB = 2000

_WORD_TEXT = (
    "the of and to a in is you that it he was for on are as with his they I at be this have from or one "
    "had by word but not what all were we when your can said there use an each which she do how their if "
    "will up other about out many then them these so some her would make like him into time has look two "
    "more write go see number no way could people my than first water been call who its now find long "
    "down day did get come made may part over new sound take only little work know place year live me "
    "back give most very after thing our just name good sentence man think say great where help through "
    "much before line right too mean old any same tell boy follow came want show also around form three "
    "small set put end does another well large must big even such because turn here why ask went men read "
    "need land different home us move try kind hand picture again change off play spell air away animal "
    "house point page letter mother answer found study still learn should world hello thanks please "
    "message reply question weather today tomorrow switchboard assistant user system model server worker "
    "queue session mail chat text phone order price delivery"
)
_WORDS = tuple(_WORD_TEXT.split())
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
           "ch", "sh", "th", "st", "tr", "br", "pl", "gr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "io")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "st")


@dataclass(frozen=True)
class ModelShape:
    """Hyper-parameters of one llama-architecture shape."""

    name: str
    n_embd: int
    n_layer: int
    n_ff: int
    n_head: int
    n_head_kv: int
    n_ctx: int
    n_vocab: int | None  # None: the trained tokenizer's own size
    default_quant: str

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


SHAPES: dict[str, ModelShape] = {
    "tiny": ModelShape("tiny", n_embd=128, n_layer=2, n_ff=256, n_head=4, n_head_kv=2, n_ctx=2048,
                       n_vocab=None, default_quant="f32"),
    "tinyllama-1.1b": ModelShape("tinyllama-1.1b", n_embd=2048, n_layer=22, n_ff=5632, n_head=32, n_head_kv=4,
                                 n_ctx=2048, n_vocab=32000, default_quant="q4_0"),
}


@dataclass(frozen=True)
class TokenizerData:
    """A SentencePiece vocabulary in GGUF's parallel-array form."""

    tokens: tuple[str, ...]
    scores: tuple[float, ...]
    types: tuple[int, ...]  # gguf.TokenType values
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2


def _pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(rng.randint(1, 3))) + rng.choice(_CODAS)


def _corpus(rng: random.Random, n_lines: int = 6000) -> list[str]:
    """English-ish sentences with invented words mixed in, so BPE finds plenty of merges."""
    invented = sorted({_pseudo_word(rng) for _ in range(4000)})
    lines: list[str] = []
    for _ in range(n_lines):
        words: list[str] = []
        for _ in range(rng.randint(4, 14)):
            roll = rng.random()
            if roll < 0.6:
                # Zipf-ish: early (common) words far more often.
                words.append(_WORDS[min(int(rng.paretovariate(1.1)) - 1, len(_WORDS) - 1)])
            elif roll < 0.93:
                words.append(rng.choice(invented))
            elif roll < 0.97:
                words.append(str(rng.randint(0, 2025)))
            else:
                words.append(rng.choice(("(ok)", "'quote'", "a-b", "x/y", "#tag", "@user", "e.g.", "100%")))
        sentence = " ".join(words)
        sentence = sentence[0].upper() + sentence[1:] + rng.choice((".", ".", ".", "?", "!", ",", ":"))
        if rng.random() < 0.1:
            sentence += "\n" + rng.choice(_WORDS)
        lines.append(sentence)
    return lines


@lru_cache(maxsize=4)
def train_tokenizer(vocab_size: int = _TOKENIZER_VOCAB) -> TokenizerData:
    """Train a llama-style SentencePiece BPE tokenizer (byte fallback, so any text encodes).

    Single-threaded on a fixed corpus, hence deterministic; cached because it
    costs a couple of seconds.
    """
    import sentencepiece as spm

    lines = _corpus(random.Random(_CORPUS_SEED))
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        max_sentence_length=4096,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(float(sp.get_score(i)))
        if sp.is_unknown(i):
            types.append(2)
        elif sp.is_control(i):
            types.append(3)
        elif sp.is_byte(i):
            types.append(6)
        elif sp.is_unused(i):
            types.append(5)
        else:
            types.append(1)
    if "<0x0A>" not in tokens:
        raise RuntimeError("trained tokenizer lacks the <0x0A> byte piece llama.cpp needs for newlines")
    return TokenizerData(tuple(tokens), tuple(scores), tuple(types))


def _padded(tok: TokenizerData, n_vocab: int) -> TokenizerData:
    """Pad to ``n_vocab`` with invented whole words (normal pieces) so the big shape
    has TinyLlama's 32,000-row embedding and its gibberish is still readable."""
    if n_vocab <= len(tok.tokens):
        return tok
    rng = random.Random(_CORPUS_SEED + 1)
    existing = set(tok.tokens)
    extra: list[str] = []
    while len(extra) < n_vocab - len(tok.tokens):
        piece = "\u2581" + _pseudo_word(rng) + _pseudo_word(rng)
        if piece not in existing:
            existing.add(piece)
            extra.append(piece)
    low = min(tok.scores) - 1.0
    return TokenizerData(
        tokens=tok.tokens + tuple(extra),
        scores=tok.scores + tuple(low - i for i in range(len(extra))),
        types=tok.types + (1,) * len(extra),
        unk_id=tok.unk_id,
        bos_id=tok.bos_id,
        eos_id=tok.eos_id,
    )


@dataclass(frozen=True)
class _Tensor:
    name: str
    shape: tuple[int, ...]  # numpy order: [out, in]
    kind: str  # "norm" | "embd" | "weight" | "output"


def _tensor_plan(shape: ModelShape, n_vocab: int) -> list[_Tensor]:
    e, kv = shape.n_embd, shape.n_head_kv * shape.head_dim
    plan = [_Tensor("token_embd.weight", (n_vocab, e), "embd")]
    for i in range(shape.n_layer):
        b = f"blk.{i}."
        plan += [
            _Tensor(b + "attn_norm.weight", (e,), "norm"),
            _Tensor(b + "attn_q.weight", (e, e), "weight"),
            _Tensor(b + "attn_k.weight", (kv, e), "weight"),
            _Tensor(b + "attn_v.weight", (kv, e), "weight"),
            _Tensor(b + "attn_output.weight", (e, e), "weight"),
            _Tensor(b + "ffn_norm.weight", (e,), "norm"),
            _Tensor(b + "ffn_gate.weight", (shape.n_ff, e), "weight"),
            _Tensor(b + "ffn_down.weight", (e, shape.n_ff), "weight"),
            _Tensor(b + "ffn_up.weight", (shape.n_ff, e), "weight"),
        ]
    plan += [_Tensor("output_norm.weight", (e,), "norm"), _Tensor("output.weight", (n_vocab, e), "output")]
    return plan


def parameter_count(shape: str = "tiny") -> int:
    """Weights in a model of ``shape`` (benchmarks report it; tests check the 1.1B claim)."""
    spec = SHAPES[shape]
    n_vocab = spec.n_vocab if spec.n_vocab is not None else len(train_tokenizer().tokens)
    return sum(int(np.prod(t.shape)) for t in _tensor_plan(spec, n_vocab))


def _std(t: _Tensor) -> float:
    """Scales chosen so the random net gives varied, non-degenerate samples:
    unit embeddings, logits with std ~2.5 (silenced rows like EOS stay unlikely)."""
    if t.kind == "embd":
        return 1.0
    if t.kind == "output":
        return 2.5 / float(np.sqrt(t.shape[1]))
    return 0.5 / float(np.sqrt(t.shape[1]))


def _q4_0_random(rng: np.random.Generator, rows: int, cols: int, std: float) -> npt.NDArray[np.uint8]:
    """Random Q4_0 blocks straight from bytes: each 32 weights = f16 scale + 16 nibble bytes.

    Uniform nibbles give (q - 8) * d with std ~4.6 d, so d = std / 4.6.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block_size, type_size = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_0]
    if cols % block_size:
        raise ValueError(f"Q4_0 needs rows of a multiple of {block_size} weights, got {cols}")
    nb = cols // block_size
    data = rng.integers(0, 256, size=(rows, nb * type_size), dtype=np.uint8)
    scales = (std / 4.6) * rng.uniform(0.75, 1.25, size=(rows, nb))
    blocks = data.reshape(rows, nb, type_size)
    blocks[:, :, 0:2] = scales.astype("<f2").view(np.uint8).reshape(rows, nb, 2)
    return data


def _materialize(t: _Tensor, quant: str, rng: np.random.Generator, silent_rows: npt.NDArray[np.intp]) -> npt.NDArray[
        np.generic]:
    if t.kind == "norm":
        return np.ones(t.shape, dtype=np.float32)
    std = _std(t)
    if quant == "q4_0":
        data = _q4_0_random(rng, t.shape[0], t.shape[1], std)
        if t.kind == "output" and silent_rows.size:
            # A zero scale zeroes a whole block: the row's logit is then 0.
            blocks = data.reshape(t.shape[0], -1, 18)
            blocks[silent_rows, :, 0:2] = 0
        return data
    dtype = np.float16 if quant == "f16" else np.float32
    arr = (rng.standard_normal(t.shape, dtype=np.float32) * std).astype(dtype)
    if t.kind == "output" and silent_rows.size:
        arr[silent_rows] = 0
    return arr


def _silent_rows(tok: TokenizerData) -> npt.NDArray[np.intp]:
    """Rows of ``output`` zeroed so the model (almost) never emits EOS/BOS/UNK or raw
    bytes: replies are then non-empty and printable.  Newline stays allowed."""
    newline = tok.tokens.index("<0x0A>")
    rows = [i for i, kind in enumerate(tok.types) if kind in (2, 3, 6) and i != newline]
    return np.asarray(rows, dtype=np.intp)


def write_tiny_model(
    path: str | os.PathLike[str],
    *,
    shape: str = "tiny",
    quant: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight llama GGUF to ``path`` (atomically) and return the path.

    Deterministic for a given (shape, quant, seed).  Tensors are generated and
    streamed one by one, so memory stays at one tensor even for the 1.1B shape.
    """
    import gguf

    try:
        spec = SHAPES[shape]
    except KeyError:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}") from None
    quant = quant or spec.default_quant
    if quant not in QUANTS:
        raise ValueError(f"unknown quant {quant!r}; known: {', '.join(QUANTS)}")

    tok = train_tokenizer()
    if spec.n_vocab is not None:
        tok = _padded(tok, spec.n_vocab)
    n_vocab = len(tok.tokens)
    plan = _tensor_plan(spec, n_vocab)
    silent = _silent_rows(tok)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")

    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quant]
    w = gguf.GGUFWriter(None, "llama")
    w.add_name(f"switchboard-{spec.name}-random")
    w.add_description("Random weights for tests and benchmarks: replies are gibberish.")
    w.add_file_type(int(file_type))
    if quant == "q4_0":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(spec.n_ctx)
    w.add_embedding_length(spec.n_embd)
    w.add_block_count(spec.n_layer)
    w.add_feed_forward_length(spec.n_ff)
    w.add_rope_dimension_count(spec.head_dim)
    w.add_head_count(spec.n_head)
    w.add_head_count_kv(spec.n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("llama")
    w.add_token_list(list(tok.tokens))
    w.add_token_scores(list(tok.scores))
    w.add_token_types(list(tok.types))
    w.add_unk_token_id(tok.unk_id)
    w.add_bos_token_id(tok.bos_id)
    w.add_eos_token_id(tok.eos_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(TINY_CHAT_TEMPLATE)

    def tensors() -> Iterator[tuple[_Tensor, npt.NDArray[np.generic]]]:
        for idx, t in enumerate(plan):
            rng = np.random.default_rng([seed, idx])
            yield t, _materialize(t, quant, rng, silent)

    q4 = gguf.GGMLQuantizationType.Q4_0
    for t in plan:  # tensor infos first: the header needs every shape and size up front
        if t.kind == "norm" or quant != "q4_0":
            dtype = np.dtype(np.float32 if t.kind == "norm" or quant == "f32" else np.float16)
            w.add_tensor_info(t.name, t.shape, dtype, int(np.prod(t.shape)) * dtype.itemsize)
        else:
            byte_shape = (t.shape[0], t.shape[1] // 32 * 18)
            w.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), byte_shape[0] * byte_shape[1], raw_dtype=q4)
    try:
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for _t, data in tensors():
            w.write_tensor_data(data)
        w.close()
        os.replace(tmp, out)
    finally:
        w.close()
        tmp.unlink(missing_ok=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core_worker.tiny_model",
        description="Write a random-weight llama GGUF (gibberish replies) for tests and benchmarks.",
    )
    parser.add_argument("out", help="output .gguf path")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--quant", choices=QUANTS, default=None,
                        help="weight type (default: f32 for tiny, q4_0 for tinyllama-1.1b)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.monotonic()
    path = write_tiny_model(args.out, shape=args.shape, quant=args.quant, seed=args.seed)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path} ({args.shape}, {size_mb:.1f} MB) in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
