"""The per-sender budget of helper calls (``RATE_LIMIT_HELPER_CALLS``), counted in the core.

The edge cannot know which messages will call a helper, so the core counts a
call when it decides to make one, before the call is queued.  One bucket per
sender (channel + sender id) across every helper: past it that person is
told to slow down and no call is made, so one person's flood cannot exhaust
a helper for everyone else.  Same notation, strategy and Redis buckets layout
as the edge's limits (``limits`` on the system's Redis); when Redis cannot
count, the call goes ahead (``RATE_LIMIT_FAIL_OPEN``) or the message is
retried like any other Redis failure.
"""

from __future__ import annotations

import logging
import math
import time

import redis
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import STRATEGIES, RateLimiter

from tasks.keys import Keys, scoped
from tasks.settings import Settings, SettingsError

__all__ = ["HelperCallLimit"]

log = logging.getLogger(__name__)


class HelperCallLimit:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.setting = settings.rate_limit_helper_calls
        try:
            self.item: RateLimitItem | None = parse(self.setting) if self.setting else None
        except ValueError as exc:
            raise SettingsError(f"RATE_LIMIT_HELPER_CALLS={self.setting!r} is not a rate limit like '30/minute'") \
                from exc
        if settings.rate_limit_strategy not in STRATEGIES:
            raise SettingsError(f"RATE_LIMIT_STRATEGY must be one of {', '.join(sorted(STRATEGIES))}")
        storage = RedisStorage("redis://", connection_pool=client.connection_pool)
        self.limiter: RateLimiter = STRATEGIES[settings.rate_limit_strategy](storage)
        self.key_prefix = Keys(settings.key_prefix).ratelimit
        self.fail_open = settings.rate_limit_fail_open

    def hit(self, channel: str, sender: str) -> int | None:
        """Count one helper call of this sender; None if it may be made, else seconds until it may."""
        if self.item is None:
            return None
        identifiers = (self.key_prefix, "helper-calls", scoped(channel, sender))
        try:
            if self.limiter.hit(self.item, *identifiers):
                return None
            reset_at = self.limiter.get_window_stats(self.item, *identifiers).reset_time
        except (redis.RedisError, StorageError, OSError) as exc:
            if self.fail_open:
                log.warning("helper call of %s:%s not counted (storage unreachable): %s", channel, sender, exc)
                return None
            raise
        log.info("helper call limit exceeded by %s:%s (%s)", channel, sender, self.setting)
        return max(1, math.ceil(reset_at - time.time()))
