"""Channels: thin Flask webhooks that verify, dedupe, normalize and enqueue."""
