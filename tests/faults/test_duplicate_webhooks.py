"""Every provider's webhook delivered three times (two at once, one later): one reply each, in order.

Providers retry a webhook they think failed (a timeout, a lost response), and
may send it twice at once.  The edge dedupes by the provider's own delivery id
(Twilio MessageSid, Telegram update_id, Slack event_id, the mail's Message-ID
and Mailgun's token, the API's Idempotency-Key) inside the same atomic
admission that queues the message.  Replies are read where the person would
see them: the fake Twilio, Telegram and Slack APIs, the SMTP server, and the
API client's reply_url; each reply echoes the text it answers, which is how
it is matched to its message.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from functools import partial

import pytest
import requests

from tests.support.factories import AUTH
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackEvents
from tests.support.fake_telegram import TOKEN as TELEGRAM_TOKEN
from tests.support.fake_telegram import FakeTelegram
from tests.support.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FakeTwilio, TwilioWebhooks
from tests.support.fates import FateBook
from tests.support.harness import CallbackReceiver, System, wait_until
from tests.support.mail_servers import SmtpRecorder
from tests.support.traffic import report, start_system

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MakeSystem = Callable[..., System]
SessionsPerChannel, MessagesPerSession = 10, 2
TELEGRAM_SECRET, MAILGUN_KEY = "webhook-secret_0123456789", "mailgun-key"
ECHO = re.compile(r"\b((?:tw|tg|sl|em|api)-\d+ #\d+)")  # the echoed text (a first mail's comes after its subject)
_ids = itertools.count(int(time.time()) % 1_000_000 * 100)


@pytest.fixture
def providers() -> Iterator[tuple[FakeTwilio, FakeTelegram, FakeSlack, SmtpRecorder]]:
    twilio, telegram, slack, smtp = FakeTwilio(), FakeTelegram(), FakeSlack(), SmtpRecorder()
    smtp.start()
    yield twilio, telegram, slack, smtp
    smtp.stop()
    for fake in (twilio, telegram, slack):
        fake.close()


class Deliveries:
    """Sends each logical message three times and records, per message, whether any delivery got a 2xx."""

    def __init__(self, system: System, book: FateBook, callbacks: CallbackReceiver) -> None:
        self.system, self.book, self.callbacks = system, book, callbacks
        self.twilio = TwilioWebhooks(AUTH_TOKEN, system.env["PUBLIC_BASE_URL"], system.base_url)
        self.slack = SlackEvents(system.base_url)
        self.statuses: dict[str, list[int]] = {}

    def thrice(self, session: str, text: str, sends: list[Callable[[], requests.Response]]) -> None:
        """Deliveries 1 and 2 at once, 3 a moment later (a provider's retry)."""
        codes: list[int] = []
        threads = [threading.Thread(target=lambda s=s: codes.append(s().status_code)) for s in sends[:2]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        time.sleep(0.05)
        codes.append(sends[2]().status_code)
        self.statuses[text] = codes
        if any(200 <= code < 300 for code in codes):
            self.book.accept(session, text)

    def sms(self, session: str, person: str, text: str) -> None:
        sid = "SM" + uuid.uuid4().hex
        self.thrice(session, text, [lambda: self.twilio.sms(person, text, sid=sid)] * 3)

    def telegram(self, session: str, chat: int, text: str) -> None:
        update_id, message_id = next(_ids), next(_ids)
        body = {"update_id": update_id, "message": {
            "message_id": message_id, "date": int(time.time()), "chat": {"id": chat, "type": "private"},
            "from": {"id": chat, "is_bot": False, "first_name": "Test"}, "text": text}}

        def send() -> requests.Response:
            return requests.post(f"{self.system.base_url}/v1/channels/telegram", json=body,
                                 headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}, timeout=20)

        self.thrice(session, text, [send] * 3)

    def slack_dm(self, session: str, channel: str, text: str) -> None:
        payload = SlackEvents.direct(text, event_id=f"Ev{uuid.uuid4().hex[:10]}", channel=channel,
                                     ts=f"{time.time():.6f}")
        sends: list[Callable[[], requests.Response]] = [partial(self.slack.post, payload, retry=n) for n in range(3)]
        self.thrice(session, text, sends)

    def mailgun(self, session: str, sender: str, text: str, thread: list[str]) -> None:
        msg = EmailMessage()
        msg_id = f"<{uuid.uuid4().hex}@example.org>"
        msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = sender, "bot@example.com", "Faults", msg_id
        if thread:
            msg["In-Reply-To"], msg["References"] = thread[-1], " ".join(thread)
        thread.append(msg_id)
        msg.set_content(text)
        raw = msg.as_bytes()
        token = uuid.uuid4().hex

        def send(token: str) -> requests.Response:
            ts = str(int(time.time()))
            sig = hmac.new(MAILGUN_KEY.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
            fields = {"timestamp": ts, "token": token, "signature": sig, "recipient": "bot@example.com",
                      "X-Mailgun-Spf": "Pass", "sender": sender}  # Mailgun vouches: the thread holds
            return requests.post(f"{self.system.base_url}/v1/channels/email/mailgun", data=fields,
                                 files={"body-mime": (None, raw)}, timeout=60)

        # the same signed POST twice at once (one is a replayed token), then a fresh token for the same mail
        self.thrice(session, text, [lambda: send(token), lambda: send(token), lambda: send(uuid.uuid4().hex)])

    def api(self, session: str, text: str) -> None:
        key = uuid.uuid4().hex

        def send() -> requests.Response:
            return requests.post(f"{self.system.base_url}/v1/messages", json={
                "user": session, "text": text, "reply_url": self.callbacks.url},
                headers={**AUTH, "Idempotency-Key": key}, timeout=20)

        self.thrice(session, text, [send] * 3)


def test_every_provider_webhook_delivered_three_times_is_answered_once(
    make_system: MakeSystem, callbacks: CallbackReceiver,
    providers: tuple[FakeTwilio, FakeTelegram, FakeSlack, SmtpRecorder],
) -> None:
    twilio, telegram, slack, smtp = providers
    system = make_system(
        LLM_BACKEND="tests.support.scripted_backend:factory",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_API_BASE_URL=twilio.url,
        TELEGRAM_BOT_TOKEN=TELEGRAM_TOKEN, TELEGRAM_WEBHOOK_SECRET=TELEGRAM_SECRET, TELEGRAM_API_BASE_URL=telegram.url,
        SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_BASE_URL=slack.url,
        SMTP_HOST="127.0.0.1", SMTP_PORT=str(smtp.port), SMTP_FROM="bot@example.com", SMTP_TIMEOUT="2",
        MAILGUN_SIGNING_KEY=MAILGUN_KEY,
    )
    system.env["PUBLIC_BASE_URL"] = "https://switchboard.example.com"  # Twilio signs the public URL
    start_system(system)
    book = FateBook()
    send = Deliveries(system, book, callbacks)

    def session_thread(i: int) -> None:
        person, chat, channel, sender = f"+1555{i:07d}", 7_000 + i, f"C{i:06d}", f"p{i}@example.org"
        thread: list[str] = []
        for n in range(MessagesPerSession):
            send.sms(f"tw-{i}", person, f"tw-{i} #{n}")
            send.telegram(f"tg-{i}", chat, f"tg-{i} #{n}")
            send.slack_dm(f"sl-{i}", channel, f"sl-{i} #{n}")
            send.mailgun(f"em-{i}", sender, f"em-{i} #{n}", thread)
            send.api(f"api-{i}", f"api-{i} #{n}")

    threads = [threading.Thread(target=session_thread, args=(i,)) for i in range(SessionsPerChannel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    def replies() -> list[str]:
        texts = [p["text"] for p in telegram.sent()] + [m.body for m in twilio.sent] + \
                [p["text"] for p in slack.posts] + [c.body["text"] for c in callbacks.received]
        texts += [str(m.get_body(preferencelist=("plain",)).get_content()) for m in list(smtp.received)]  # type: ignore[union-attr]
        return [m.group(1) for text in texts for m in ECHO.finditer(text)]

    expected = 5 * SessionsPerChannel * MessagesPerSession
    try:
        wait_until(lambda: set(book.accepted_ids) <= set(replies()), 120, "a reply to every message")
    except TimeoutError:
        missing = sorted(set(book.accepted_ids) - set(replies()))
        mails = [m.as_string()[-600:] for m in smtp.received]
        raise AssertionError(f"no reply to {missing}; mails {mails}\n{system.logs()}") from None
    time.sleep(3)  # late duplicates would arrive now
    for text in replies():  # per source, in the order each fake recorded them
        book.reply(text)
    tally = book.tally()
    wrong = {t: codes for t, codes in send.statuses.items()
             if not all(200 <= c < 300 or (t.startswith("em-") and c == 403) for c in codes)}
    report(tally.line("duplicate-webhooks", f"{3 * expected} deliveries of {expected} webhooks (Twilio SMS, "
                      "Telegram, Slack, Mailgun, API Idempotency-Key; 2 concurrent + 1 retry each)"))
    assert not wrong, wrong
    assert tally.accepted == expected and tally.exactly_once, (tally, system.logs())
