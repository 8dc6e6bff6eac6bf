"""Provider channels: one module each, registered by name in ``BUILTIN_CHANNELS``."""

from __future__ import annotations

from flask import Flask

from edge.channels.base import Channel
from edge.channels.callback import callback_blueprint
from edge.channels.email.channel import EmailChannel
from edge.channels.slack import Slack
from edge.channels.telegram.channel import Telegram
from edge.channels.twilio.sms import TwilioSMS
from edge.channels.twilio.voice import TwilioVoice
from edge.context import EdgeContext

__all__ = ["BUILTIN_CHANNELS", "register_channels"]

BUILTIN_CHANNELS: dict[str, type[Channel]] = {
    EmailChannel.name: EmailChannel,
    Slack.name: Slack,
    Telegram.name: Telegram,
    TwilioSMS.name: TwilioSMS,
    TwilioVoice.name: TwilioVoice,
}


def register_channels(app: Flask, ctx: EdgeContext) -> dict[str, Channel]:
    """Mount every built-in channel's webhooks and the shared callback route."""
    channels = {name: cls(ctx) for name, cls in BUILTIN_CHANNELS.items()}
    for channel in channels.values():
        app.register_blueprint(channel.blueprint())
    app.register_blueprint(callback_blueprint(channels))
    return channels
