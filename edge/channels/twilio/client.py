"""The Twilio REST client (SMS replies): built at ``TWILIO_API_BASE_URL``, its errors sorted for retries."""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from edge.channels.base import PermanentSendError, TemporarySendError
from tasks.settings import Settings

__all__ = ["describe", "rest_client", "send_sms"]


def rest_client(settings: Settings) -> Client:
    """The real Twilio client, at ``TWILIO_API_BASE_URL`` (a fake in tests, or a proxy)."""
    http = TwilioHttpClient(timeout=settings.twilio_api_timeout)
    client = Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http)
    client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client


def describe(exc: TwilioRestException) -> str:
    """A Twilio API error as a plain reason (its ``str`` is coloured for terminals)."""
    code = f" error {exc.code}" if exc.code else ""
    return f"Twilio HTTP {exc.status}{code}: {exc.msg}"


def send_sms(client: Client, to: str, sender: str, body: str) -> str:
    """``messages.create``; its sid, or TemporarySendError (429, 5xx, network) / PermanentSendError."""
    try:
        message = client.messages.create(to=to, from_=sender, body=body)
    except TwilioRestException as exc:
        if exc.status == 429 or exc.status >= 500:
            raise TemporarySendError(describe(exc)) from exc
        raise PermanentSendError(describe(exc)) from exc
    except (requests.RequestException, TwilioException) as exc:
        raise TemporarySendError(f"Twilio API unreachable: {type(exc).__name__}: {exc}") from exc
    return str(message.sid)
