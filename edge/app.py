"""The edge's Flask app factory: ``gunicorn 'edge.app:create_app()'``."""

from __future__ import annotations

import redis
from celery import Celery
from flask import Flask

from edge import api, files, health, helpers_api, observability, openapi, status_page, webchat
from edge.channels import register_channels
from edge.context import EdgeContext
from edge.errors import register_error_handlers
from edge.file_blobs import blobs_from_settings
from edge.file_store import FileStore
from edge.ratelimit import RateLimits
from edge.redis_fill import RedisFill
from edge.waits import WaitSlots
from outbound_http.host_policy import HostPolicy
from redis_stores.deadletters import DeadLetters
from redis_stores.helper_registry import registry_from_settings
from redis_stores.messages import MessageStore
from redis_stores.redis_client import redis_client
from tasks.celery_factory import create_celery
from tasks.keys import Keys
from tasks.settings import Settings, load_settings

__all__ = ["create_app"]


def create_app(
    settings: Settings | None = None, *, client: redis.Redis | None = None, celery: Celery | None = None
) -> Flask:
    """Build the edge; ``client``/``celery`` may be injected (tests), else made from ``settings``."""
    settings = settings or load_settings()
    observability.install_logging(settings)
    app = Flask("switchboard.edge")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    keys = Keys(settings.key_prefix)
    client = client or redis_client(settings)
    limits = RateLimits(settings, client)
    context = app.extensions["switchboard"] = EdgeContext(
        settings=settings,
        redis=client,
        keys=keys,
        messages=MessageStore(
            client, keys, status_ttl=settings.status_ttl_seconds, idempotency_ttl=settings.idempotency_ttl_seconds
        ),
        dead_letters=DeadLetters(client, keys),
        celery=celery or create_celery(settings, main="switchboard-edge"),
        policy=HostPolicy(settings.allowed_host_list),
        helpers=registry_from_settings(client, keys, settings),
        limits=limits,
        waits=WaitSlots(settings.wait_slots, settings.long_poll_per_client),
        fill=RedisFill(client, max_fill=settings.redis_admit_max_fill, interval=settings.redis_fill_check_interval),
        files=FileStore(client, keys.prefix, blobs_from_settings(settings),
                        sweep_interval=settings.files_sweep_interval),
    )
    register_error_handlers(app)
    limits.init_app(app, api.blueprint, files.blueprint, helpers_api.blueprint)
    observability.install(app, settings, client)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(health.blueprint)
    app.register_blueprint(helpers_api.blueprint)
    app.register_blueprint(files.blueprint)
    app.register_blueprint(webchat.blueprint)
    app.register_blueprint(openapi.blueprint)
    app.register_blueprint(status_page.blueprint)
    app.extensions["switchboard.channels"] = register_channels(app, context)
    return app
