"""The model library called directly, in a child process, exactly as our backends load and call it.

The baseline of ``bench/model_speed.py``: the same GGUF, the same load
arguments (``core_worker/llm``), the worker's exact prompt (chat template and
system prompt, tokenized the same way) and sampling settings, without the
worker around it.  The child is driven by JSON lines on stdin/stdout
(``python -m bench.direct_model SPEC_JSON``) so the parent can alternate its
calls with messages through the worker while both models stay loaded.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import IO, Any

from bench.common import ROOT, python_path

__all__ = ["DirectModel", "DirectRunner"]


def _cpu_lib() -> str | None:
    """ctransformers' prebuilt library for this CPU (ctransformers' own rule, without its slow detection)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    if "avx2" in flags:
        return "avx2"
    return "avx" if "avx" in flags and "f16c" in flags else "basic"


class DirectModel:
    """The library loaded by hand with the load arguments of our backend."""

    def __init__(self, backend: str, path: str, threads: int, n_ctx: int) -> None:
        from core_worker.chat_template import read_gguf_info, template_for_model
        from core_worker.llm.base import effective_context
        from tasks.settings import load_settings

        settings = load_settings()
        self.settings = settings
        self.backend, self.threads, self.temperature = backend, threads, settings.llm_temperature
        self.info = read_gguf_info(path)
        self.template = template_for_model(self.info)
        self.stop = list(self.template.stop)
        n_ctx = effective_context(n_ctx, self.info.context_length)
        started = time.perf_counter()
        self.llm: Any
        if backend == "llama_cpp":
            from llama_cpp import Llama

            self.llm = Llama(
                model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, use_mmap=False,
                n_gpu_layers=0, verbose=False,
            )
        elif backend == "ctransformers":
            from ctransformers import LLM, Config

            config = Config(context_length=n_ctx, threads=threads, batch_size=512, mmap=False, gpu_layers=0)
            self.llm = LLM(path, "gguf", config=config, lib=_cpu_lib())
        else:
            raise ValueError(f"unknown backend {backend!r}")
        self.load_s = time.perf_counter() - started
        from core_worker.llm.prompt_pieces import PromptSplitter, template_tokens

        self.lstrip: frozenset[int] = frozenset()
        self.rstrip: frozenset[int] = frozenset()
        if backend == "llama_cpp":
            from core_worker.llm.llama_cpp_backend import vocab_tokens

            vocab = vocab_tokens(self.llm._model)  # the LlamaModel inside Llama
            control, self.lstrip, self.rstrip = vocab.control, vocab.lstrip, vocab.rstrip
            self.user_defined = PromptSplitter({})
        else:
            user_defined = {t: i for t, i in self.info.special_tokens.items() if t not in self.info.control_tokens}
            markers = template_tokens(self.template, user_defined)
            control = {**self.info.control_tokens, **markers}
            self.user_defined = PromptSplitter({t: i for t, i in user_defined.items() if t not in markers})
        self.splitter = PromptSplitter(control)

    def tokens(self, text: str) -> list[int]:
        """The worker's prompt for one message from a new user, as token ids."""
        from core_worker.llm.base import ChatMessage
        from core_worker.llm.prompt_pieces import strip_around, token_ids

        system = [ChatMessage("system", self.settings.system_prompt)] if self.settings.system_prompt else []
        messages = [*system, ChatMessage("user", text)]
        if self.backend == "llama_cpp":
            pieces = strip_around(self.splitter.pieces(self.template, messages), self.lstrip, self.rstrip)
            bos = self.llm.token_bos() if self.llm._model.add_bos_token() else None
            return token_ids(pieces, lambda t: list(self.llm.tokenize(t.encode("utf-8"), add_bos=False,
                                                                      special=False)), bos)
        # As our ctransformers backend: the template's control tokens as ids, the rest as text.
        user_defined = self.user_defined
        bos = self.llm.bos_token_id if self.info.add_bos_token else None
        return token_ids(
            self.splitter.pieces(self.template, messages),
            lambda t: token_ids(user_defined.split(t), lambda u: self.llm.tokenize(u, add_bos_token=False), None),
            bos,
        )

    def cold_prompt_seconds(self, tokens: list[int]) -> float:
        """Evaluate the whole prompt from an empty cache (llama_cpp: plus sampling one token)."""
        from core_worker.llm.base import DEFAULT_REPEAT_PENALTY, DEFAULT_TOP_K, DEFAULT_TOP_P

        if self.backend == "llama_cpp":
            self.llm.reset()
            started = time.perf_counter()
            self.llm.create_completion(
                prompt=tokens, max_tokens=1, temperature=self.temperature, top_k=DEFAULT_TOP_K,
                top_p=DEFAULT_TOP_P, repeat_penalty=DEFAULT_REPEAT_PENALTY, seed=1,
            )
            return time.perf_counter() - started
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reset() is "deprecated" but the only way to empty the cache
            self.llm.reset()
        started = time.perf_counter()
        self.llm.eval(tokens, batch_size=512, threads=self.threads)
        return time.perf_counter() - started

    def generate(self, tokens: list[int], limit: int) -> tuple[int, float]:
        """One completion of up to ``limit`` tokens with our sampling settings; (tokens, seconds)."""
        from core_worker.llm.base import DEFAULT_REPEAT_PENALTY, DEFAULT_TOP_K, DEFAULT_TOP_P

        seed = random.getrandbits(31)
        started = time.perf_counter()
        if self.backend == "llama_cpp":
            out: Any = self.llm.create_completion(
                prompt=tokens, max_tokens=limit, temperature=self.temperature, top_k=DEFAULT_TOP_K,
                top_p=DEFAULT_TOP_P, repeat_penalty=DEFAULT_REPEAT_PENALTY, stop=self.stop, seed=seed, stream=False,
            )
            count = int(out["usage"]["completion_tokens"])
        else:
            count = 0
            for _token in self.llm.generate(
                tokens, top_k=DEFAULT_TOP_K, top_p=DEFAULT_TOP_P, temperature=self.temperature,
                repetition_penalty=DEFAULT_REPEAT_PENALTY, seed=seed, threads=self.threads, reset=True,
            ):
                count += 1
                if count >= limit:
                    break
        return count, time.perf_counter() - started


def child_main(spec: dict[str, Any], stdin: IO[str], stdout: IO[str]) -> None:
    """Load, then answer ``{"text", "limit"}`` lines with ``{"completion_tokens", "prompt_tokens", "seconds"}``.

    ``seconds`` spans rendering the chat template, tokenizing and the completion, as the worker's
    ``generation_ms`` spans ``llm.chat`` (which does all three)."""

    def say(obj: dict[str, Any]) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    model = DirectModel(spec["backend"], spec["model"], int(spec["threads"]), int(spec["n_ctx"]))
    tokens = model.tokens(spec["text"])
    cold = sorted(model.cold_prompt_seconds(tokens) for _ in range(3))[1]
    say({"load_s": model.load_s, "prompt_tokens": len(tokens), "cold_prompt_tok_s": len(tokens) / cold})
    for line in stdin:
        request = json.loads(line)
        if request.get("quit"):
            return
        started = time.perf_counter()  # the worker's generation_ms covers rendering and tokenizing too
        tokens = model.tokens(request["text"])
        count, _ = model.generate(tokens, int(request["limit"]))
        say({"completion_tokens": count, "prompt_tokens": len(tokens), "seconds": time.perf_counter() - started})


class DirectRunner:
    """Parent side of a direct model child process."""

    def __init__(self, backend: str, model: Path, *, threads: int, n_ctx: int, text: str) -> None:
        spec = {"backend": backend, "model": str(model), "threads": threads, "n_ctx": n_ctx, "text": text}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.direct_model", json.dumps(spec)], cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": python_path()}, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the libraries may print; our lines are JSON objects
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result
        raise RuntimeError(f"the direct model child exited with {self.proc.wait()}")

    def generate(self, text: str, limit: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"text": text, "limit": limit}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.write('{"quit": true}\n')
                self.proc.stdin.close()
            except OSError:  # the child is gone (crashed)
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]), sys.stdin, sys.stdout)
