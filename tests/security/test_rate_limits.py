"""Per-sender rate limits in process (fakeredis as the limiter's storage): buckets, 429s, fail-open.

The same through gunicorn and a real Redis, including Redis going away, is
in test_edge_abuse.py.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from limits.storage import RedisStorage

from edge.ratelimit import RateLimits
from tasks.settings import SettingsError, load_settings
from tests.security import providers
from tests.security.providers import send
from tests.support.edge import RecordingCelery
from tests.support.factories import keyed

LOW = {"rate_limit_user": "3/minute", "rate_limit_ip": "8/minute", "rate_limit_uploads": "2/minute",
       "rate_limit_sender": "2/minute"}


@pytest.fixture
def limited(make_app: Any) -> FlaskClient:
    client: FlaskClient = keyed(make_app(**LOW).test_client())
    return client


def message(client: FlaskClient, user: str, ip: str = "198.51.100.1") -> Any:
    return client.post("/v1/messages", json={"user": user, "text": "hi"}, environ_base={"REMOTE_ADDR": ip})


def assert_429(response: Any, mentions: str) -> None:
    assert response.status_code == 429, response.get_json()
    assert mentions in response.get_json()["error"]
    assert 1 <= int(response.headers["Retry-After"]) <= 61


def test_a_user_over_its_limit_gets_429_and_nothing_is_queued(
    limited: FlaskClient, celery_app: RecordingCelery
) -> None:
    assert [message(limited, "alice").status_code for _ in range(3)] == [202] * 3
    assert_429(message(limited, "alice"), "this user")
    assert len(celery_app.sent) == 3
    assert message(limited, "bob").status_code == 202  # another user's bucket


def test_rotating_user_ids_from_one_address_meets_the_ip_bucket(limited: FlaskClient) -> None:
    statuses = [message(limited, f"user{i}").status_code for i in range(8)]
    assert statuses == [202] * 8
    assert_429(message(limited, "user-next"), "this address")
    assert limited.get("/v1/messages/x", environ_base={"REMOTE_ADDR": "198.51.100.1"}).status_code == 429
    assert message(limited, "user-next", ip="198.51.100.2").status_code == 202
    assert limited.get("/healthz", environ_base={"REMOTE_ADDR": "198.51.100.1"}).status_code == 200


def test_uploads_have_their_own_per_user_bucket(limited: FlaskClient) -> None:
    def upload() -> Any:
        return limited.post("/v1/files", data={"user": "carol", "file": (io.BytesIO(b"hello"), "a.txt")},
                            content_type="multipart/form-data")

    assert [upload().status_code for _ in range(2)] == [202, 202]
    assert_429(upload(), "uploads")
    assert message(limited, "carol").status_code == 202  # messages are counted apart


SMS = "/v1/channels/twilio/sms"


def test_a_provider_sender_is_limited_after_its_signature_verified(
    limited: FlaskClient, celery_app: RecordingCelery
) -> None:
    for i in range(5):  # forged requests in the sender's name spend none of its budget
        assert send(limited, providers.twilio(SMS, providers.sms_form(f"SMF{i}"), token="forged")).status_code == 403
    statuses = [send(limited, providers.twilio(SMS, providers.sms_form(f"SM{i}"))).status_code for i in range(3)]
    assert statuses == [200, 200, 429]
    assert len(celery_app.sent) == 2
    other = providers.sms_form("SMother", sender="+15550002222")
    assert send(limited, providers.twilio(SMS, other)).status_code == 200
    stop = providers.sms_form("SMstop", body="STOP")  # opting out is never rate limited
    assert send(limited, providers.twilio(SMS, stop)).status_code == 200


@pytest.mark.parametrize("make", [
    lambda i: providers.telegram(update_id=100 + i, user_id=7),
    lambda i: providers.slack(event_id=f"EvRL{i}", user="U7"),
    lambda i: providers.mailgun(token=f"rl-{i}", raw=providers.mail(f"<rl{i}@example.org>")),
    lambda i: providers.sendgrid(providers.mail(f"<sg{i}@example.org>")),
], ids=["telegram", "slack", "mailgun", "sendgrid"])
def test_every_provider_channel_limits_its_senders(
    limited: FlaskClient, celery_app: RecordingCelery, make: Any
) -> None:
    statuses = [send(limited, make(i)).status_code for i in range(3)]
    assert statuses == [200, 200, 429]
    assert len(celery_app.sent) == 2


def test_a_mailgun_post_turned_away_can_be_retried_with_its_token(
    limited: FlaskClient, celery_app: RecordingCelery, fake_redis: Any
) -> None:
    """Mailgun retries a non-2xx with the same token: the replay guard must not make that a 403."""
    for i in range(2):
        send(limited, providers.mailgun(token=f"m{i}", raw=providers.mail(f"<m{i}@example.org>")))
    third = providers.mailgun(token="m2", raw=providers.mail("<m2@example.org>"))
    assert send(limited, third).status_code == 429
    for key in fake_redis.scan_iter("LIMITS:*sender*"):
        fake_redis.delete(key)  # the window passes
    assert send(limited, third).status_code == 200
    assert len(celery_app.sent) == 3


def test_an_empty_limit_turns_its_bucket_off(make_app: Any) -> None:
    client = keyed(make_app(**{**LOW, "rate_limit_user": "", "rate_limit_ip": ""}).test_client())
    assert {message(client, "alice").status_code for _ in range(12)} == {202}


def test_a_malformed_limit_is_refused_at_start(fake_redis: Any) -> None:
    with pytest.raises(SettingsError, match="RATE_LIMIT_USER"):
        RateLimits(load_settings({}, rate_limit_user="lots"), fake_redis)
    with pytest.raises(SettingsError, match="RATE_LIMIT_STRATEGY"):
        RateLimits(load_settings({}, rate_limit_strategy="leaky-bucket"), fake_redis)


@pytest.fixture
def storage_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """The limiter's Redis calls fail (the edge's other Redis calls, on fakeredis, still work)."""

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise redis.ConnectionError("limiter storage down")

    monkeypatch.setattr(RedisStorage, "incr", refuse)


def test_the_limiter_fails_open_when_its_storage_is_down(
    make_app: Any, storage_down: None, celery_app: RecordingCelery
) -> None:
    client = keyed(make_app(**LOW).test_client())
    assert [message(client, "alice").status_code for _ in range(10)] == [202] * 10
    assert send(client, providers.telegram(update_id=5)).status_code == 200
    assert len(celery_app.sent) == 11


def test_with_fail_open_off_the_limiter_answers_503(
    make_app: Any, storage_down: None, celery_app: RecordingCelery
) -> None:
    client = keyed(make_app(**LOW, rate_limit_fail_open=False).test_client())
    for response in (message(client, "alice"), send(client, providers.telegram(update_id=6))):
        assert response.status_code == 503 and "error" in response.get_json()
    assert celery_app.sent == []
