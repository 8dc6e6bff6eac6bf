"""An edge with every channel configured (fakeredis, a recording Celery), for the in-process abuse tests.

The real-process tests in this package (``-m integration``) use the
integration fixtures, imported here so pytest sees them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from edge.app import create_app
from tasks.settings import Settings, load_settings
from tests.factories import API_KEYS, keyed
from tests.integration.conftest import (  # noqa: F401 - fixtures for the integration tests of this package
    callbacks,
    clean_redis,
    make_system,
    pytest_runtest_makereport,
    redis_server,
    secret,
    tiny_model_file,
)
from tests.security import providers
from tests.unit.test_edge_api import RecordingCelery


def configured_settings(**changes: Any) -> Settings:
    """Every channel configured with the test secrets of ``providers``."""
    values: dict[str, Any] = dict(
        key_prefix="sec",
        public_base_url=providers.PUBLIC,
        switchboard_secret=providers.CALLBACK_SECRET,
        helper_registration_token=providers.REGISTRATION_TOKEN,
        twilio_account_sid="AC1",
        twilio_auth_token=providers.TWILIO_TOKEN,
        telegram_bot_token="123:telegram-token",
        telegram_webhook_secret=providers.TELEGRAM_SECRET,
        telegram_bot_username="switchboard_bot",
        telegram_typing_seconds=0.0,  # no "typing…" thread calling the real Bot API
        slack_signing_secret=providers.SLACK_SECRET,
        mailgun_signing_key=providers.MAILGUN_KEY,
        sendgrid_inbound_secret=providers.SENDGRID_SECRET,
        api_keys=API_KEYS,
    )
    values.setdefault("files_dir", tempfile.mkdtemp(prefix="switchboard-files-"))
    return load_settings({}, **{**values, **changes})


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    yield client
    client.flushall()


@pytest.fixture
def celery_app(fake_redis: fakeredis.FakeRedis) -> RecordingCelery:
    return RecordingCelery(fake_redis)


@pytest.fixture
def make_app(fake_redis: fakeredis.FakeRedis, celery_app: RecordingCelery) -> Any:
    def make(**changes: Any) -> Flask:
        return create_app(configured_settings(**changes), client=fake_redis, celery=celery_app)

    return make


@pytest.fixture
def app(make_app: Any) -> Flask:
    flask_app: Flask = make_app()
    return flask_app


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with keyed(app.test_client()) as test_client:
        yield test_client


def send(client: FlaskClient, signed: providers.Signed) -> Any:
    return client.post(signed.path, data=signed.body, headers=signed.headers, content_type=signed.content_type)
