"""The Redis keys that were once built inline (edge/channels, edge/file_store.py, the rate limits) are built in
``Keys`` now: each method is pinned to the exact bytes the old code wrote, so data written before keeps working."""

from __future__ import annotations

import fakeredis

from edge.channels.partials import ShownReplies
from edge.file_store import RECORD_KEYS
from tasks.keys import Keys

KEYS = Keys("sb")


def test_channel_keys_are_the_ones_written_before() -> None:
    assert KEYS.callback_sent("telegram", "msg_1") == "sb:channel:telegram:sent:msg_1"
    assert KEYS.callback_claim("telegram", "msg_1") == "sb:channel:telegram:sent:msg_1:claim"
    assert KEYS.reply_part_sent("telegram", "m1", 0) == "sb:telegram:sent:m1:0"
    assert KEYS.reply_part_sent("slack", "m1", 2) == "sb:slack:sent:m1:2"
    assert KEYS.reply_part_sent("twilio", "m1", 1) == "sb:twilio:sent:m1:1"
    assert KEYS.partial_reply("slack", "m1") == "sb:slack:partial:m1"
    assert KEYS.partial_reply_lock("telegram", "m1") == "sb:telegram:partial:m1:lock"
    assert KEYS.twilio_opt_out("+15550001") == "sb:twilio:optout:+15550001"
    assert KEYS.mailgun_token("ab" * 32) == "sb:email:mailgun-token:" + "ab" * 32
    assert KEYS.helper_trial("calculator") == "sb:helper:calculator:health:trial"


def test_file_and_limit_keys_are_the_ones_written_before() -> None:
    assert KEYS.upload_file("f" * 32) == "sb:file:" + "f" * 32
    assert KEYS.mail_attachment("a1") == "sb:email:attachment:a1"
    assert KEYS.owner_files_expiry("tests") == "sb:owner:5:tests:files:expires"
    assert KEYS.owner_files_expiry("tests") == f"{KEYS.owner_files('tests')}:expires"
    assert KEYS.ratelimit == "sb:ratelimit"
    assert Keys("other").ratelimit == "other:ratelimit"
    assert {kind: key(Keys("p"), "x") for kind, key in RECORD_KEYS.items()} == {
        "uploads": "p:file:x", "mail": "p:email:attachment:x"}


def test_the_partial_store_uses_the_pinned_keys() -> None:
    shown = ShownReplies(fakeredis.FakeRedis(decode_responses=True), Keys("sb"), "telegram", ttl=60, lock_seconds=1)
    assert shown.key("m1") == "sb:telegram:partial:m1"
    assert shown.lock_key("m1") == "sb:telegram:partial:m1:lock"
