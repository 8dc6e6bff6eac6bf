"""The SSRF guard for every request this system makes to a URL it was given (helpers, callbacks, media)."""
