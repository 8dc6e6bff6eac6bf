"""``python -m edge.channels.telegram set-webhook`` registers the webhook (with its secret) with Telegram;
``… info`` shows what Telegram has."""

from __future__ import annotations

import argparse
import re
import sys

from edge.channels.telegram.bot_api import BotAPI, TelegramError
from edge.channels.telegram.channel import ROUTE
from tasks.settings import Settings, load_settings

__all__ = ["main", "set_webhook"]

_SECRET_FORM = re.compile(r"^[A-Za-z0-9_-]{1,256}\Z")


def set_webhook(settings: Settings, url: str | None = None, *, drop_pending: bool = False) -> str:
    """Register ``<PUBLIC_BASE_URL>/v1/channels/telegram`` (or ``url``) with its secret token."""
    if not settings.telegram_bot_token:
        raise SystemExit("TELEGRAM_BOT_TOKEN is not set")
    if not _SECRET_FORM.match(settings.telegram_webhook_secret):
        raise SystemExit("TELEGRAM_WEBHOOK_SECRET must be 1-256 of A-Z a-z 0-9 _ - (e.g. `openssl rand -hex 32`)")
    target = url or f"{settings.public_base_url.rstrip('/')}{ROUTE}"
    api = BotAPI(settings.telegram_api_base_url, settings.telegram_bot_token, settings.telegram_api_timeout)
    api.call("setWebhook", {"url": target, "secret_token": settings.telegram_webhook_secret,
                            "allowed_updates": ["message"], "drop_pending_updates": drop_pending})
    return target


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.channels.telegram", description="Telegram webhook setup")
    commands = parser.add_subparsers(dest="command", required=True)
    setup = commands.add_parser("set-webhook", help="register this edge's webhook and secret with Telegram")
    setup.add_argument("--url", help="webhook URL (default: PUBLIC_BASE_URL + /v1/channels/telegram)")
    setup.add_argument("--drop-pending", action="store_true", help="discard updates Telegram still holds")
    commands.add_parser("info", help="show getWebhookInfo")
    args = parser.parse_args(argv)
    settings = settings or load_settings()
    try:
        if args.command == "set-webhook":
            print(f"webhook set: {set_webhook(settings, args.url, drop_pending=args.drop_pending)}")
        else:
            api = BotAPI(settings.telegram_api_base_url, settings.telegram_bot_token, settings.telegram_api_timeout)
            print(api.call("getWebhookInfo"))
    except TelegramError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    return 0

