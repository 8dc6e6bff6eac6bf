"""What every edge view needs, built once per app by the factory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from celery import Celery
from flask import current_app

from outbound_http.host_policy import HostPolicy
from redis_stores.deadletters import DeadLetters
from redis_stores.helper_registry import HelperRegistry
from redis_stores.messages import MessageStore
from tasks.keys import Keys
from tasks.settings import Settings

if TYPE_CHECKING:
    from edge.file_store import FileStore
    from edge.ratelimit import RateLimits
    from edge.redis_fill import RedisFill
    from edge.waits import WaitSlots

__all__ = ["EdgeContext", "edge"]


@dataclass
class EdgeContext:
    settings: Settings
    redis: redis.Redis
    keys: Keys
    messages: MessageStore
    dead_letters: DeadLetters
    celery: Celery
    policy: HostPolicy
    helpers: HelperRegistry
    limits: RateLimits | None = None  # None: nothing is rate limited (the IMAP poller's own app has one too)
    waits: WaitSlots | None = None  # None: long polls are not bounded (an app that serves no API)
    fill: RedisFill | None = None  # None: admission does not look at Redis' memory
    files: FileStore | None = None  # None: an app that stores no files


def edge() -> EdgeContext:
    context: EdgeContext = current_app.extensions["switchboard"]
    return context
