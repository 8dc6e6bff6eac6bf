"""The fault suite's model: echoes at a chosen speed, records each run, and can crash on purpose.

Select it with ``LLM_BACKEND=tests.support.fault_backend:factory``.

- It echoes the last user message, so a reply says which message it answers.
- Each generation takes ``FAULT_BACKEND_SECONDS`` (default 0) of real time in
  the worker, so a scenario can kill a worker *mid-generation*.
- It records every run in Redis (``FAULT_RUNS_KEY``, a list on ``REDIS_URL``):
  ``start`` and ``end`` with the session's id, the text, the pid and the time,
  which is how the suite proves two runs of a session never overlapped and
  finds the pid to kill.  Recording is best effort: while Redis is down the
  worker fails anyway.
- A message containing ``FAULT_POISON`` (default ``POISON``) kills its worker
  process with ``os._exit`` every time: a poison message.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import redis

from core_worker.llm import BackendConfig, ChatMessage, Completion

RUNS_KEY = "faults:runs"


class FaultBackend:
    name = "fault"
    constrains_json = False

    def __init__(self, config: BackendConfig) -> None:
        self.context_length = config.n_ctx if config.n_ctx > 0 else 2048
        self.delay = float(os.environ.get("FAULT_BACKEND_SECONDS", "0"))
        self.poison = os.environ.get("FAULT_POISON", "POISON")
        self.runs_key = os.environ.get("FAULT_RUNS_KEY", RUNS_KEY)
        self.redis = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2, socket_connect_timeout=1)

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + 1

    def chat(
        self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        json_schema: dict[str, Any] | None = None,
    ) -> Completion:
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        self._record("start", last)
        if self.poison and self.poison in last:
            os._exit(70)  # a crash the worker cannot catch: every attempt dies here
        time.sleep(self.delay)
        self._record("end", last)
        text = f"echo: {last}"
        return Completion(text, self.count_tokens(" ".join(m.content for m in messages)), len(text.split()), "stop")

    def _record(self, event: str, text: str) -> None:
        entry = json.dumps({"event": event, "text": text, "pid": os.getpid(), "at": time.time()})
        with contextlib.suppress(redis.RedisError):
            self.redis.rpush(self.runs_key, entry)

    def close(self) -> None:
        self.redis.close()


def factory(config: BackendConfig) -> FaultBackend:
    return FaultBackend(config)
