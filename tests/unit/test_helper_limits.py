"""The per-sender budget of helper calls, counted in the core (core_worker/helper_limits.py)."""

from __future__ import annotations

import fakeredis
import pytest

from core_worker.helper_limits import HelperCallLimit
from tasks.settings import Settings, SettingsError


def test_each_sender_has_a_budget_of_its_own(settings: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    limit = HelperCallLimit(settings.replace(rate_limit_helper_calls="2/hour"), fake_redis)
    assert [limit.hit("api", "mallory") for _ in range(2)] == [None, None]
    retry_after = limit.hit("api", "mallory")
    assert retry_after is not None and 3500 < retry_after <= 3600
    assert limit.hit("api", "bob") is None
    assert limit.hit("telegram", "mallory") is None  # a sender is a channel's sender


def test_an_empty_setting_turns_the_limit_off(settings: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    limit = HelperCallLimit(settings.replace(rate_limit_helper_calls=""), fake_redis)
    assert all(limit.hit("api", "mallory") is None for _ in range(100))


def test_a_limit_that_is_not_one_is_refused_at_start(settings: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(SettingsError, match="RATE_LIMIT_HELPER_CALLS"):
        HelperCallLimit(settings.replace(rate_limit_helper_calls="lots"), fake_redis)

