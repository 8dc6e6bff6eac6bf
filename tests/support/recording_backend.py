"""The model process's test model: it echoes, and writes down what it ran, for tests that cannot see inside
the child (core_worker/llm/model_process.py runs it in a spawned process).

Every event is a JSON line appended to the file named by ``RECORDING_BACKEND_FILE``: ``loading`` (the
child's pid, before the factory's work), ``start`` and ``end`` of each chat (its text, the pid, how many
calls ran at once: ``running`` at its start, ``max_running`` over its whole run) and ``stopped`` when a
progress callback raised (the words written by then).

A message can steer its own run, so a test orders calls without clocks:

- ``hold:<name> …`` waits until the file ``<record>.<name>`` exists (:func:`release`), offering its
  progress meanwhile, so a cancel reaches it;
- ``stream:<n> …`` writes ``n`` words, one every ``RECORDING_BACKEND_WORD_SECONDS`` (0.01), reporting
  progress after each.

``slow_load_factory`` sleeps ``RECORDING_BACKEND_LOAD_SECONDS`` before it builds the backend;
``failing_factory`` raises :data:`LOAD_FAILURE`.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core_worker.llm import BackendConfig, ChatMessage, Completion
from core_worker.llm.base import Progress
from tests.support.echo_backend import EchoBackend

__all__ = ["LOAD_FAILURE", "RECORD_ENV", "RecordingBackend", "events", "factory", "failing_factory", "release",
           "slow_load_factory"]

RECORD_ENV = "RECORDING_BACKEND_FILE"
LOAD_FAILURE = "the weights are missing on purpose"
HOLD_LIMIT = 120.0  # a held call that nobody releases fails rather than outlive the test


def _record(event: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "pid": os.getpid(), **fields})
    with _write_lock, open(os.environ[RECORD_ENV], "a", encoding="utf-8") as out:
        out.write(line + "\n")


_write_lock = threading.Lock()


def events(record: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The events written so far, in order (only those named ``event`` if given)."""
    if not record.exists():
        return []
    found = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines() if line]
    return [e for e in found if event is None or e["event"] == event]


def release(record: Path, name: str) -> None:
    """Let the calls ``hold:<name>`` go on."""
    record.with_name(f"{record.name}.{name}").touch()


class RecordingBackend(EchoBackend):
    name = "recording"
    streams = True

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.record = Path(os.environ[RECORD_ENV])
        self.word_seconds = float(os.environ.get("RECORDING_BACKEND_WORD_SECONDS", "0.01"))
        self._lock = threading.Lock()
        self._running: dict[int, list[int]] = {}  # call -> [the most calls seen running at once]
        self._ids = itertools.count()

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None, on_progress: Progress | None = None,
    ) -> Completion:
        text = self.last_text(messages)
        call = next(self._ids)
        with self._lock:
            self._running[call] = [0]
            for seen in self._running.values():
                seen[0] = max(seen[0], len(self._running))
            running = len(self._running)
        _record("start", text=text, running=running)
        words: list[str] = []  # streamed so far
        try:
            streamed = self._run(text, words, on_progress)
        except BaseException as exc:
            _record("stopped", text=text, words=len(words), error=type(exc).__name__)
            raise
        finally:
            with self._lock:
                most = self._running.pop(call)[0]
        _record("end", text=text, max_running=most)
        if not streamed:
            return self.completion(messages, self.answer(text))
        return Completion(" ".join(words), self.prompt_tokens(messages), len(words), "stop")

    def _run(self, text: str, words: list[str], on_progress: Progress | None) -> bool:
        """Hold or stream into ``words`` as the text says; whether it streamed (else: a plain echo)."""
        command, _, _ = text.partition(" ")
        if command.startswith("hold:"):
            gate = self.record.with_name(f"{self.record.name}.{command[5:]}")
            deadline = time.monotonic() + HOLD_LIMIT
            while not gate.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{gate} never appeared")
                if on_progress is not None:
                    on_progress(lambda: "")
                time.sleep(0.01)
            return False
        if command.startswith("stream:"):
            for i in range(int(command[7:])):
                time.sleep(self.word_seconds)
                words.append(f"w{i}")
                if on_progress is not None:
                    on_progress(lambda: " ".join(words))
            return True
        return False


def factory(config: BackendConfig) -> RecordingBackend:
    _record("loading")
    return RecordingBackend(config)


def slow_load_factory(config: BackendConfig) -> RecordingBackend:
    _record("loading")
    time.sleep(float(os.environ.get("RECORDING_BACKEND_LOAD_SECONDS", "60")))
    return RecordingBackend(config)


def failing_factory(config: BackendConfig) -> RecordingBackend:
    _record("loading")
    raise RuntimeError(LOAD_FAILURE)
