"""Quantized GGUF files load and generate with both local backends (in a child: a crash is a failure here,
not the end of the test run).  Found on a Sapphire Rapids VM: llama.cpp built with -march=native ran its AMX
kernels, which the VM does not enable, and every quantized model died with a general protection fault."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core_worker.tiny_model import write_tiny_model

pytestmark = pytest.mark.integration

GENERATE = """
import sys
from core_worker.llm.base import BackendConfig, ChatMessage
from core_worker.llm.registry import load_backend
backend = load_backend(BackendConfig(backend=sys.argv[1], model_path=sys.argv[2], n_ctx=512, n_threads=1,
                                       max_tokens=8, seed=1))
completion = backend.chat([ChatMessage("user", "hello there, how are you today?")])
print(completion.completion_tokens)
"""


@pytest.fixture(scope="module")
def q4_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("q4") / "tiny-q4_0.gguf", quant="q4_0")


@pytest.mark.parametrize("backend", ["llama_cpp", "ctransformers"])
def test_q4_0_model_generates(backend: str, q4_model: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", GENERATE, backend, str(q4_model)], cwd=root,
                            capture_output=True, text=True, timeout=120)
    if result.returncode < 0:
        name = signal.Signals(-result.returncode).name
        pytest.fail(f"{backend} crashed with {name} on a Q4_0 model (llama.cpp built with AMX? see Makefile "
                    f"NO_AMX):\n{result.stderr[-2000:]}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 0
