"""Slack end to end: signed Events API requests -> gunicorn edge -> Celery core -> chat.postMessage on a fake Slack.

The real ``slack_sdk`` WebClient in the edge is pointed at ``FakeSlack`` (real
HTTP); the model is the scripted echo backend.  One system serves the module;
each test uses its own channel.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackEvents
from tests.support.harness import RedisServer, System, system_env, wait_until

pytestmark = pytest.mark.integration

_ids = itertools.count(1)


def ids() -> tuple[str, str, str]:
    """A fresh (event id, channel, ts)."""
    n = next(_ids)
    return f"Ev{n:06d}", f"C{n:06d}", f"{1_700_000_000 + n}.000100"


@pytest.fixture(scope="module")
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    yield fake
    fake.close()


def slack_env(redis_url: str, secret: str, model: Path, fake: FakeSlack) -> dict[str, str]:
    return system_env(redis_url, secret, model, LLM_BACKEND="tests.support.scripted_backend:factory",
                      SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_BASE_URL=fake.url,
                      SLACK_API_TIMEOUT="3")


@pytest.fixture(scope="module")
def system(
    redis_server: RedisServer, secret: str, tiny_model_file: Path, tmp_path_factory: pytest.TempPathFactory,
    fake_slack: FakeSlack,
) -> Iterator[System]:
    redis_server.client().flushall()
    system = System(slack_env(redis_server.url, secret, tiny_model_file, fake_slack), tmp_path_factory.mktemp("slack"))
    system.start_all()
    yield system
    system.stop()


@pytest.fixture
def events(system: System) -> SlackEvents:
    return SlackEvents(system.base_url)


def test_the_url_verification_challenge_is_echoed(events: SlackEvents) -> None:
    response = events.post({"type": "url_verification", "token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595"})
    assert response.status_code == 200 and response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595"}


def test_a_mention_is_answered_in_its_thread(events: SlackEvents, fake_slack: FakeSlack) -> None:
    event_id, channel, ts = ids()
    started = time.monotonic()
    response = events.post(SlackEvents.mention("what is up?", event_id=event_id, channel=channel, ts=ts))
    assert response.status_code == 200 and time.monotonic() - started < 3
    wait_until(lambda: len(fake_slack.in_channel(channel)) == 1, 30, "the reply")
    (post,) = fake_slack.in_channel(channel)
    assert post["text"] == "echo: what is up?" and post["thread_ts"] == ts


def test_a_direct_message_is_answered_and_markup_is_escaped(events: SlackEvents, fake_slack: FakeSlack) -> None:
    event_id, _, ts = ids()
    channel = "D" + event_id
    assert events.post(SlackEvents.direct("ping <!channel> & co", event_id=event_id, channel=channel,
                                          ts=ts)).status_code == 200
    wait_until(lambda: len(fake_slack.in_channel(channel)) == 1, 30, "the reply")
    (post,) = fake_slack.in_channel(channel)
    assert post["text"] == "echo: ping &lt;!channel&gt; &amp; co" and "thread_ts" not in post


def test_forged_and_replayed_requests_are_refused(events: SlackEvents, fake_slack: FakeSlack) -> None:
    event_id, channel, ts = ids()
    payload = SlackEvents.mention("sneaky", event_id=event_id, channel=channel, ts=ts)
    assert events.post(payload, secret="not-the-secret").status_code == 403
    assert events.post(payload, timestamp=int(time.time()) - 6 * 60).status_code == 403
    time.sleep(1)  # a reply would be posted by now
    assert fake_slack.in_channel(channel) == []


def test_retries_are_answered_once(events: SlackEvents, fake_slack: FakeSlack) -> None:
    event_id, channel, ts = ids()
    payload = SlackEvents.mention("just once", event_id=event_id, channel=channel, ts=ts)
    for retry in range(3):
        assert events.post(payload, retry=retry).status_code == 200
    wait_until(lambda: len(fake_slack.in_channel(channel)) >= 1, 30, "the reply")
    time.sleep(1)  # a duplicate would arrive now
    assert [p["text"] for p in fake_slack.in_channel(channel)] == ["echo: just once"]


def test_a_long_reply_is_split_and_a_rate_limit_is_retried(events: SlackEvents, fake_slack: FakeSlack) -> None:
    event_id, channel, ts = ids()
    paragraph = "Slack replies are split below four thousand characters. " * 50  # ~2850 characters
    text = f"{paragraph.strip()}\n\n{paragraph.strip()}"
    fake_slack.fail_next(429, "ratelimited")
    assert events.post(SlackEvents.mention(text, event_id=event_id, channel=channel, ts=ts)).status_code == 200
    wait_until(lambda: len(fake_slack.in_channel(channel)) >= 2, 40, "both parts")
    time.sleep(1)
    posts = fake_slack.in_channel(channel)
    assert len(posts) == 2 and all(p["thread_ts"] == ts for p in posts)
    assert "\n\n".join(p["text"] for p in posts) == f"echo: {text}"


def test_a_first_delivery_lost_to_a_redis_outage_is_taken_on_slacks_retry(
    secret: str, tiny_model_file: Path, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    own_redis = RedisServer(tmp_path / "redis")
    try:
        system = System(slack_env(own_redis.url, secret, tiny_model_file, fake_slack), tmp_path)
        try:
            system.start_edge()
            system.start_worker("core", "core")
            system.start_worker("io", "deliver", pool="threads", concurrency=2)
            events = SlackEvents(system.base_url)
            event_id, channel, ts = ids()
            payload = SlackEvents.mention("during the outage", event_id=event_id, channel=channel, ts=ts)
            own_redis.stop()
            assert events.post(payload).status_code == 503
            own_redis.restart()
            wait_until(lambda: events.post(payload, retry=1).status_code == 200, 30, "the retry to be accepted")
            wait_until(lambda: len(fake_slack.in_channel(channel)) == 1, 40, "the reply")
            assert fake_slack.in_channel(channel)[0]["text"] == "echo: during the outage"
        finally:
            system.stop()
    finally:
        own_redis.stop()
