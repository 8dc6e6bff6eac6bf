"""Driving core_worker/llm/batch_engine.py step by step in tests, without clocks.

The tiny model generates thousands of tokens a second, so "submit B while A is generating" is a race
unless the engine waits for the test.  :class:`Brake` wraps the engine's ``detokenize``, which the
engine's thread calls once per sampled token: armed, it stops that thread inside the next token (the step
done, its job not yet notified) until the test releases it.  Whatever the test submits meanwhile joins at
the very next step, and ``Job.admitted_step`` / ``token_steps`` / ``ended_step`` say what happened.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from core_worker.llm.batch_engine import BatchEngine, Job, Sampling

__all__ = ["GREEDY", "Brake", "job", "start_engine"]

GREEDY = Sampling(temperature=0.0, top_k=40, top_p=0.95, repeat_penalty=1.1, seed=1)
HOLD_TIMEOUT = 30.0  # far beyond a tiny model's step: only a broken engine waits this long


class Brake:
    """A ``detokenize`` that can hold the engine's thread inside its next sampled token."""

    def __init__(self, detokenize: Callable[[list[int]], bytes]) -> None:
        self._detokenize = detokenize
        self._armed = False
        self._held = threading.Event()
        self._go = threading.Event()

    def __call__(self, ids: list[int]) -> bytes:
        if self._armed and threading.current_thread().name == "llm-batch":  # not text_of in a caller's thread
            self._armed = False
            self._held.set()
            if not self._go.wait(HOLD_TIMEOUT):
                raise RuntimeError("the test never released the brake")
        return self._detokenize(ids)

    def arm(self) -> None:
        """Hold the engine at the next token it samples."""
        self._held.clear()
        self._go.clear()
        self._armed = True

    def wait_held(self) -> None:
        if not self._held.wait(HOLD_TIMEOUT):
            raise TimeoutError("the engine sampled no token")

    def release(self) -> None:
        self._go.set()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """After :meth:`arm`: inside, the engine is stopped at the token it sampled since."""
        self.wait_held()
        try:
            yield
        finally:
            self.release()


def start_engine(model: Any, *, parallel: int = 2, n_ctx_seq: int = 512, prefill_chunk: int = 64,
                 snapshot_bytes: int = 0) -> tuple[BatchEngine, Brake]:
    """An engine over a loaded ``LlamaModel`` (one thread), with its brake."""
    brake = Brake(lambda ids: bytes(model.detokenize(ids, special=False)))
    engine = BatchEngine(model, parallel=parallel, n_ctx_seq=n_ctx_seq, n_threads=1, prefill_chunk=prefill_chunk,
                         snapshot_bytes=snapshot_bytes, detokenize=brake)
    return engine, brake


def job(tokens: list[int], max_tokens: int, *, grammar: str | None = None, owner: str = "", public: int = 0) -> Job:
    """A greedy job with no stop strings: it runs to ``max_tokens`` unless the model ends it."""
    return Job(tokens=list(tokens), max_tokens=max_tokens, sampling=GREEDY, stops=[], grammar=grammar, owner=owner,
               public=public)
