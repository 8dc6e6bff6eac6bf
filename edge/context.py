"""What every edge view needs, built once per app by the factory."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery
from flask import current_app

from tasks.deadletters import DeadLetters
from tasks.helpers import HelperRegistry
from tasks.keys import Keys
from tasks.messages import MessageStore
from tasks.outbound import HostPolicy
from tasks.settings import Settings

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


def edge() -> EdgeContext:
    context: EdgeContext = current_app.extensions["switchboard"]
    return context
