"""Twilio: SMS and voice webhooks in, REST messages and TwiML out."""
