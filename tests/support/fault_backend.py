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

from core_worker.llm import BackendConfig, ChatMessage
from tests.support.echo_backend import EchoBackend, last_user_text

RUNS_KEY = "faults:runs"


class FaultBackend(EchoBackend):
    name = "fault"
    fallback_context = 2048

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self.delay = float(os.environ.get("FAULT_BACKEND_SECONDS", "0"))
        self.poison = os.environ.get("FAULT_POISON", "POISON")
        self.runs_key = os.environ.get("FAULT_RUNS_KEY", RUNS_KEY)
        self.redis = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=2, socket_connect_timeout=1)

    def last_text(self, messages: Sequence[ChatMessage]) -> str:
        return last_user_text(messages)

    def answer(self, text: str, *, max_tokens: int | None = None, json_schema: dict[str, Any] | None = None) -> str:
        self._record("start", text)
        if self.poison and self.poison in text:
            os._exit(70)  # a crash the worker cannot catch: every attempt dies here
        time.sleep(self.delay)
        self._record("end", text)
        return super().answer(text)

    def _record(self, event: str, text: str) -> None:
        entry = json.dumps({"event": event, "text": text, "pid": os.getpid(), "at": time.time()})
        with contextlib.suppress(redis.RedisError):
            self.redis.rpush(self.runs_key, entry)

    def close(self) -> None:
        super().close()
        self.redis.close()


def factory(config: BackendConfig) -> FaultBackend:
    return FaultBackend(config)
