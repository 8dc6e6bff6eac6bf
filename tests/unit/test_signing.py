from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tasks.signing import new_secret, sign_headers, verify


def test_signed_headers_verify_with_the_standardwebhooks_package() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "msg_1", '{"a":1}')
    assert Webhook(secret).verify('{"a":1}', headers) == {"a": 1}


def test_a_tampered_body_fails_verification() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "msg_1", '{"a":1}')
    with pytest.raises(WebhookVerificationError):
        verify(secret, '{"a":2}', headers)


def test_another_secret_fails_verification() -> None:
    headers = sign_headers(new_secret(), "msg_1", "{}")
    with pytest.raises(WebhookVerificationError):
        verify(new_secret(), "{}", headers)
