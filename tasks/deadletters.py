"""The dead-letter list: messages and replies the system gave up on, with the reason."""

from __future__ import annotations

import json
from typing import Any

import redis

from tasks import metrics
from tasks.keys import Keys
from tasks.schemas import utcnow_iso

__all__ = ["DeadLetters"]

KEEP = 10_000


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis, self.key = client, keys.dead_letters

    def add(self, kind: str, message_id: str, reason: str) -> None:
        entry = json.dumps({"kind": kind, "message_id": message_id, "reason": reason, "at": utcnow_iso()})
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(self.key, entry)
        pipe.ltrim(self.key, 0, KEEP - 1)
        pipe.execute()
        metrics.inc("switchboard_dead_letters_total", kind=kind)

    def count(self) -> int:
        return int(self.redis.llen(self.key))

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        raw: list[str] = self.redis.lrange(self.key, 0, limit - 1)  # type: ignore[assignment]
        return [json.loads(item) for item in raw]
