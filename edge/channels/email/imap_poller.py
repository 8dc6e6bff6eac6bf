"""The IMAP poller: mail for people without an inbound-parse service (``python -m edge.channels.email.imap_poller``).

Every ``IMAP_POLL_SECONDS`` it looks for unseen mail in ``IMAP_MAILBOX``,
fetches each with ``BODY.PEEK[]`` (which leaves it unseen), hands it to the
email channel's intake — the same parse, dedupe and durable enqueue as the
webhooks — and only then sets ``\\Seen``.  If the queue cannot take a mail
the round stops and the mail stays unseen for the next one: nothing is
acknowledged that was not enqueued.  A mail nobody can be answered for (no
usable From) is flagged ``$SwitchboardRejected`` and left unread for a human.

Interval polling rather than IDLE: one code path, works with every server,
and the delay is a setting.  With ``IMAP_HOST`` empty the process idles
(a Procfile process that exits would stop ``make run``).
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import signal
import ssl
import threading
from collections.abc import Callable
from types import FrameType

import redis
from kombu.exceptions import OperationalError

from edge.channels.email.normalize import MailRejected
from edge.errors import ApiError, TooManyRequests
from tasks.settings import Settings, load_settings
from telemetry.logs import configure_logging

__all__ = ["REJECTED_FLAG", "ImapPoller", "main"]

log = logging.getLogger("edge.channels.email.imap_poller")

REJECTED_FLAG = "$SwitchboardRejected"
Ingest = Callable[[bytes], object]


class ImapPoller:
    """One mailbox, polled; ``ingest`` raises to say "not enqueued, keep it unseen"."""

    def __init__(self, settings: Settings, ingest: Ingest, stopping: threading.Event | None = None) -> None:
        self.settings, self.ingest = settings, ingest
        self.stopping = stopping or threading.Event()

    def connect(self) -> imaplib.IMAP4:
        s = self.settings
        conn: imaplib.IMAP4
        if s.imap_ssl:
            conn = imaplib.IMAP4_SSL(s.imap_host, s.imap_port, ssl_context=ssl.create_default_context(),
                                     timeout=s.imap_timeout)
        else:
            conn = imaplib.IMAP4(s.imap_host, s.imap_port, timeout=s.imap_timeout)
        try:
            conn.login(s.imap_username, s.imap_password)
            typ, data = conn.select(_quote(s.imap_mailbox))
            if typ != "OK":
                raise imaplib.IMAP4.error(f"cannot select {s.imap_mailbox!r}: {data!r}")
        except BaseException:
            _close(conn)
            raise
        return conn

    def poll_once(self, conn: imaplib.IMAP4) -> int:
        """Enqueue the unseen mail; returns how many were taken (and marked seen)."""
        typ, data = conn.uid("SEARCH", "UNSEEN", "UNKEYWORD", REJECTED_FLAG)
        if typ != "OK":
            raise imaplib.IMAP4.error(f"SEARCH failed: {data!r}")
        uids = [u.decode() for u in (data[0] or b"").split()] if data else []
        taken = 0
        for uid in uids:
            if self.stopping.is_set():
                break
            raw = self._fetch(conn, uid)
            if raw is None:
                continue
            try:
                self.ingest(raw)
            except MailRejected as exc:
                log.warning("imap: mail uid %s rejected (%s); flagged %s", uid, exc, REJECTED_FLAG)
                self._flag(conn, uid, REJECTED_FLAG)
                continue
            except TooManyRequests as exc:  # its sender is over RATE_LIMIT_SENDER: later, the others go on
                log.info("imap: uid %s stays unseen for a later round: %s", uid, exc)
                continue
            except (ApiError, redis.RedisError, OperationalError, OSError) as exc:
                log.warning("imap: could not enqueue uid %s, it stays unseen for the next round: %s", uid, exc)
                break
            self._flag(conn, uid, "\\Seen")
            taken += 1
        return taken

    def _fetch(self, conn: imaplib.IMAP4, uid: str) -> bytes | None:
        typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
        if typ != "OK":
            log.warning("imap: FETCH of uid %s failed: %r", uid, data)
            return None
        for item in data:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        return None  # expunged meanwhile

    def _flag(self, conn: imaplib.IMAP4, uid: str, flag: str) -> None:
        typ, data = conn.uid("STORE", uid, "+FLAGS.SILENT", f"({flag})")
        if typ != "OK" and flag == REJECTED_FLAG:  # no keywords on this mailbox: mark it seen rather than loop
            conn.uid("STORE", uid, "+FLAGS.SILENT", "(\\Seen)")
        elif typ != "OK":
            raise imaplib.IMAP4.error(f"STORE {flag} on uid {uid} failed: {data!r}")

    def run(self) -> None:
        """Poll until stopped; reconnect (with a growing pause) whenever the server goes away."""
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                conn = self.connect()
            except (imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
                log.warning("imap: cannot connect to %s:%s: %s", self.settings.imap_host, self.settings.imap_port, exc)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            backoff = 1.0
            log.info("imap: watching %s on %s", self.settings.imap_mailbox, self.settings.imap_host)
            try:
                while not self.stopping.is_set():
                    taken = self.poll_once(conn)
                    if taken:
                        log.info("imap: enqueued %d mail(s)", taken)
                    self.stopping.wait(self.settings.imap_poll_seconds)
                    conn.noop()
            except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError) as exc:
                log.warning("imap: connection lost: %s", exc)
            finally:
                _close(conn)

    def stop(self) -> None:
        self.stopping.set()


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _close(conn: imaplib.IMAP4) -> None:
    try:
        conn.logout()
    except Exception:
        with contextlib.suppress(Exception):
            conn.shutdown()


def main() -> None:
    settings = load_settings()
    configure_logging("mail", settings.log_format, settings.log_level)
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if not settings.imap_host:
        log.info("imap: IMAP_HOST is not set; the poller idles")
        stopping.wait()
        return
    from edge.app import create_app  # the edge's own stores and channel, built once

    app = create_app(settings)
    channel = app.extensions["switchboard.channels"]["email"]
    our_address = settings.smtp_from or (settings.imap_username if "@" in settings.imap_username else "")
    ImapPoller(settings, lambda raw: channel.ingest(raw, source="imap", our_address=our_address), stopping).run()


if __name__ == "__main__":
    main()
