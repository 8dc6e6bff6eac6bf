"""Telegram: Bot API webhook in, sendMessage out (see channel.py)."""
