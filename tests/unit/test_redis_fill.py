"""The edge's reading of Redis' memory: cached per interval, 503 past the fill, nothing without maxmemory."""

from __future__ import annotations

from typing import Any

import pytest

from edge.redis_fill import RedisFill, StorageFull


class Info:
    def __init__(self, used: int, maximum: int) -> None:
        self.used, self.maximum, self.calls = used, maximum, 0

    def info(self, section: str) -> dict[str, Any]:
        assert section == "memory"
        self.calls += 1
        return {"used_memory": self.used, "maxmemory": self.maximum}


def fill(client: Info, now: list[float], max_fill: float = 0.9) -> RedisFill:
    return RedisFill(client, max_fill=max_fill, interval=1.0, clock=lambda: now[0])  # type: ignore[arg-type]


def test_below_the_fill_admission_goes_on_and_past_it_is_refused_with_a_503() -> None:
    client, now = Info(used=800, maximum=1000), [0.0]
    guard = fill(client, now)
    guard.check()
    client.used, now[0] = 900, 1.0
    with pytest.raises(StorageFull) as refused:
        guard.check()
    assert refused.value.status == 503 and "REDIS_ADMIT_MAX_FILL" in refused.value.error


def test_one_reading_serves_every_check_within_the_interval() -> None:
    client, now = Info(used=1, maximum=1000), [0.0]
    guard = fill(client, now)
    for _ in range(50):
        guard.check()
    assert client.calls == 1
    now[0] = 1.0
    guard.check()
    assert client.calls == 2


def test_a_redis_without_maxmemory_has_no_fill_and_is_never_refused() -> None:
    client, now = Info(used=10**12, maximum=0), [0.0]
    guard = fill(client, now)
    guard.check()
    assert guard.current().ratio is None
