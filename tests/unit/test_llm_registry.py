"""load_backend's error handling and the small pure helpers; no model is loaded here."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import pytest

from core_worker.chat_template import GGUFInfo
from core_worker.llm import (
    BackendConfig,
    ChatMessage,
    Completion,
    GenerationError,
    LLMBackend,
    LLMError,
    ModelLoadError,
    load_backend,
)
from core_worker.llm.base import apply_stop, effective_context, merge_stops
from core_worker.llm.ctransformers_backend import check_supported, cpu_library
from core_worker.llm.openai_backend import OpenAIBackend


def write_metadata_gguf(path: Path, arch: str) -> Path:
    """A tensor-less GGUF of architecture ``arch``: enough for the pre-load checks."""
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(2048)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>"])
    w.add_token_types([2, 3, 3])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


class FixedBackend:
    """A minimal LLMBackend for the custom-factory path."""

    name = "fixed"
    constrains_json = False

    def __init__(self, config: BackendConfig) -> None:
        self.context_length = config.n_ctx
        self.closed = False

    def chat(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None,
             stop: Sequence[str] = (), json_schema: dict[str, Any] | None = None) -> Completion:
        return Completion("fixed", prompt_tokens=len(messages), completion_tokens=1, finish_reason="stop")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        self.closed = True


def make_fixed(config: BackendConfig) -> FixedBackend:
    return FixedBackend(config)


def make_broken(config: BackendConfig) -> FixedBackend:
    raise RuntimeError("factory exploded")


def make_wrong(config: BackendConfig) -> object:
    return object()


def test_errors_share_one_base() -> None:
    assert issubclass(ModelLoadError, LLMError) and issubclass(GenerationError, LLMError)


def test_unknown_backend() -> None:
    with pytest.raises(ModelLoadError, match=r"unknown LLM backend 'gpt5'.*llama_cpp, ctransformers, openai"):
        load_backend(BackendConfig(backend="gpt5", model_path=None))


@pytest.mark.parametrize("backend", ["llama_cpp", "llama-cpp", "ctransformers"])
def test_missing_model_file(tmp_path: Path, backend: str) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_backend(BackendConfig(backend=backend, model_path=str(missing)))


@pytest.mark.parametrize("backend", ["llama_cpp", "ctransformers"])
def test_no_model_configured(backend: str) -> None:
    with pytest.raises(ModelLoadError, match="no model file configured"):
        load_backend(BackendConfig(backend=backend, model_path=None))


@pytest.mark.parametrize("backend", ["llama_cpp", "ctransformers"])
def test_not_a_gguf(tmp_path: Path, backend: str) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        load_backend(BackendConfig(backend=backend, model_path=str(junk)))


def test_ctransformers_rejects_non_llama_architecture(tmp_path: Path) -> None:
    path = write_metadata_gguf(tmp_path / "qwen.gguf", "qwen2")
    with pytest.raises(ModelLoadError, match=r"llama-family.*'qwen2'"):
        load_backend(BackendConfig(backend="ctransformers", model_path=str(path)))


def _llama_info(**changes: object) -> GGUFInfo:
    info = GGUFInfo(
        path="m.gguf", version=3, architecture="llama", name="", context_length=2048, chat_template=None,
        tokenizer_model="llama", bos_token_id=1, eos_token_id=2, bos_token="<s>", eos_token="</s>",
        add_bos_token=True, vocab_size=3, tensor_names=frozenset({"token_embd.weight", "output.weight"}),
        tensor_types=frozenset({"F32", "Q4_0"}),
    )
    return replace(info, **changes)  # type: ignore[arg-type]


def test_ctransformers_preflight_checks() -> None:
    check_supported(_llama_info())
    with pytest.raises(ModelLoadError, match="output tensor"):
        check_supported(_llama_info(tensor_names=frozenset({"token_embd.weight"})))
    with pytest.raises(ModelLoadError, match="BF16"):
        check_supported(_llama_info(tensor_types=frozenset({"F32", "BF16"})))
    with pytest.raises(ModelLoadError, match="'gpt2' tokenizer"):
        check_supported(_llama_info(tokenizer_model="gpt2"))


def test_cpu_library_from_flags(tmp_path: Path) -> None:
    def lib(flags: str) -> str | None:
        info = tmp_path / f"cpuinfo-{len(flags)}"
        info.write_text(f"processor\t: 0\nflags\t\t: fpu {flags} sse2\n")
        return cpu_library.__wrapped__(str(info))

    assert lib("avx avx2 f16c") == "avx2"
    assert lib("avx f16c") == "avx"
    assert lib("avx") == "basic"
    assert cpu_library.__wrapped__(str(tmp_path / "absent")) is None


def test_custom_factory_is_loaded() -> None:
    backend = load_backend(BackendConfig(backend=f"{__name__}:make_fixed", model_path=None, n_ctx=1234))
    assert isinstance(backend, FixedBackend) and isinstance(backend, LLMBackend)
    assert backend.context_length == 1234
    assert backend.chat([ChatMessage("user", "hi")]).text == "fixed"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:make", "cannot import"),
        (f"{__name__}:missing", "has no attribute"),
        (f"{__name__}:", "must look like"),
        (f"{__name__}:make_broken", "factory exploded"),
        (f"{__name__}:make_wrong", "lacking chat, count_tokens, close"),
    ],
)
def test_custom_factory_errors(spec: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_backend(BackendConfig(backend=spec, model_path=None))


def test_effective_context() -> None:
    assert effective_context(4096, 2048) == 2048  # never past the trained length
    assert effective_context(1024, 2048) == 1024
    assert effective_context(0, 2048) == 2048
    assert effective_context(4096, None) == 4096


def test_stop_helpers() -> None:
    assert merge_stops(["</s>", ""], ["x", "</s>"]) == ["</s>", "x"]
    assert apply_stop("hello<|im_end|>junk</s>", ["</s>", "<|im_end|>"]) == ("hello", True)
    assert apply_stop("hello", ["</s>"]) == ("hello", False)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_openai_backend_without_server() -> None:
    config = BackendConfig(backend="openai", model_path=None, openai_base_url=f"http://127.0.0.1:{_closed_port()}/v1",
                           request_timeout=2.0, n_ctx=8192)
    backend = load_backend(config)
    assert isinstance(backend, OpenAIBackend) and backend.context_length == 8192
    with pytest.raises(GenerationError, match="failed"):
        backend.chat([ChatMessage("user", "hi")])
    assert backend.count_tokens("x" * 40) == 10  # estimate: one token per 4 characters
    backend.close()


def test_openai_backend_rejects_bad_url() -> None:
    with pytest.raises(ModelLoadError, match="http"):
        load_backend(BackendConfig(backend="openai", model_path=None, openai_base_url="127.0.0.1:8080"))
