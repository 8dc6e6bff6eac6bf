"""The random-weight model writer (loader tests, memory and speed benchmarks)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from core_worker.chat_template import load_chat_template
from core_worker.tiny_model import SHAPES, TINY_CHAT_TEMPLATE, parameter_count, train_tokenizer, write_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=7)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_model_has_the_llama_keys_both_libraries_need(tiny: Path) -> None:
    fields = gguf.GGUFReader(tiny).fields
    spec = SHAPES["tiny"]
    expected = {
        "general.architecture": "llama",
        "llama.context_length": spec.n_ctx,
        "llama.embedding_length": spec.n_embd,
        "llama.block_count": spec.n_layer,
        "llama.feed_forward_length": spec.n_ff,
        "llama.rope.dimension_count": spec.n_embd // spec.n_head,
        "llama.attention.head_count": spec.n_head,
        "llama.attention.head_count_kv": spec.n_head_kv,
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": TINY_CHAT_TEMPLATE,
    }
    for key, value in expected.items():
        assert fields[key].contents() == value, key
    for key in ("llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base", "tokenizer.ggml.scores"):
        assert key in fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert 1500 <= len(tokens) <= 2000
    assert "<0x0A>" in tokens
    assert len(fields["tokenizer.ggml.token_type"].contents()) == len(tokens)


def test_tiny_model_tensors(tiny: Path) -> None:
    reader = gguf.GGUFReader(tiny)
    tensors = {t.name: t for t in reader.tensors}
    spec = SHAPES["tiny"]
    assert len(tensors) == 3 + 9 * spec.n_layer
    per_layer = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_down",
                 "ffn_up")
    for i in range(spec.n_layer):
        for part in per_layer:
            assert f"blk.{i}.{part}.weight" in tensors
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} <= set(tensors)
    kv = spec.n_head_kv * spec.n_embd // spec.n_head
    assert list(tensors["blk.0.attn_k.weight"].shape) == [spec.n_embd, kv]  # ggml order: [in, out]
    assert all(t.tensor_type == gguf.GGMLQuantizationType.F32 for t in tensors.values())
    assert tiny.stat().st_size < 5_000_000
    assert load_chat_template(tiny).origin == "gguf"


@pytest.mark.parametrize(("quant", "weight_type"), [("f16", "F16"), ("q4_0", "Q4_0")])
def test_quantized_variants(tmp_path: Path, quant: str, weight_type: str) -> None:
    path = write_tiny_model(tmp_path / f"{quant}.gguf", quant=quant)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.attn_norm.weight"] == "F32"  # norms stay F32
    assert types["blk.0.ffn_up.weight"] == types["output.weight"] == types["token_embd.weight"] == weight_type


def test_deterministic_per_seed(tmp_path: Path, tiny: Path) -> None:
    again = write_tiny_model(tmp_path / "again.gguf", seed=7)
    other = write_tiny_model(tmp_path / "other.gguf", seed=8)
    assert _digest(again) == _digest(tiny)
    assert _digest(other) != _digest(tiny)


def test_tokenizer_training_is_deterministic() -> None:
    first = train_tokenizer.__wrapped__()  # bypass the cache: really train twice
    assert first == train_tokenizer.__wrapped__()
    assert first.types.count(6) == 256  # every byte has a fallback piece


def test_tinyllama_shape_is_1_1b_parameters() -> None:
    assert 1.05e9 < parameter_count("tinyllama-1.1b") < 1.15e9


def test_rejects_unknown_shape_and_quant(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        write_tiny_model(tmp_path / "x.gguf", shape="huge")
    with pytest.raises(ValueError, match="quant"):
        write_tiny_model(tmp_path / "x.gguf", quant="q8_9")
    assert not list(tmp_path.iterdir())


def test_cli_prints_the_path(tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    done = subprocess.run(
        [sys.executable, "-m", "core_worker.tiny_model", str(out), "--seed", "3"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True,
    )
    assert done.stdout.strip() == str(out)
    assert out.is_file()
