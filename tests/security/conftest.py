"""An edge with every channel configured (fakeredis, a recording Celery), for the in-process abuse tests.

The real-process tests in this package (``-m integration``) use the shared fixtures of
tests/support/fixtures.py (a plugin of tests/conftest.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tasks.settings import Settings, load_settings
from tests.security import providers
from tests.support.edge import EdgeApp
from tests.support.factories import API_KEYS, keyed


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
def make_app(edge_app: EdgeApp) -> Any:
    def make(**changes: Any) -> Flask:
        return edge_app(configured_settings(**changes))

    return make


@pytest.fixture
def app(make_app: Any) -> Flask:
    flask_app: Flask = make_app()
    return flask_app


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with keyed(app.test_client()) as test_client:
        yield test_client
