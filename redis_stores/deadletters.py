"""The dead-letter list: messages and replies the system gave up on, with the reason.

Each entry is ``{"kind", "message_id", "reason", "at"}``, newest first, at most
``KEEP``.  Kinds: ``poison`` (a message that crashed or timed out its workers
``MAX_ATTEMPTS`` times), ``delivery`` (a reply its callback refused or never
took), and channel-specific ones (``mail``: an inbound mail that could not be
queued).  Inspect and replay them with ``python -m operator_tools.deadletter_cli``
(``operator_tools/deadletter_cli.py``, ``redis_stores/replay.py``).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from tasks.keys import Keys
from tasks.schemas import utcnow_iso
from telemetry import metrics

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

    def entries(self) -> list[dict[str, Any]]:
        raw: list[str] = self.redis.lrange(self.key, 0, -1)  # type: ignore[assignment]
        return [json.loads(item) for item in raw]

    def for_message(self, message_id: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("message_id") == message_id]

    def remove(self, message_ids: set[str]) -> int:
        """Drop every entry of these messages; how many went."""
        raw: list[str] = self.redis.lrange(self.key, 0, -1)  # type: ignore[assignment]
        pipe = self.redis.pipeline(transaction=True)
        doomed = [item for item in raw if json.loads(item).get("message_id") in message_ids]
        for item in doomed:
            pipe.lrem(self.key, 1, item)
        pipe.execute()
        return len(doomed)

    def purge(self) -> int:
        pipe = self.redis.pipeline(transaction=True)
        pipe.llen(self.key)
        pipe.delete(self.key)
        count, _ = pipe.execute()
        return int(count)

