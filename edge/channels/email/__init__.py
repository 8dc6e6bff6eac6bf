"""Email: inbound parse webhooks (Mailgun, SendGrid), the IMAP poller, SMTP replies."""
