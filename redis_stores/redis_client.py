"""Redis clients with timeouts, so a dead or silent server never blocks us forever."""

from __future__ import annotations

import redis

from tasks.settings import Settings

__all__ = ["redis_client"]


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_connect_timeout,
        health_check_interval=settings.redis_health_check_interval,
        socket_keepalive=True,
        decode_responses=True,
    )
