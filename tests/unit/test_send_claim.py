"""The send claim: one sender at a time, renewed while the send runs, released by its owner only (issue 24 item 6).

Before, a plain ``SET NX EX 60``: a send slower than 60 s lost its claim to a retry, which mailed the reply
again, and the first send's ``finally`` then deleted the retry's claim.
"""

from __future__ import annotations

import time

import fakeredis

from edge.channels.send_claim import SendClaim


def test_a_second_sender_waits_while_the_first_holds_the_claim(fake_redis: fakeredis.FakeRedis) -> None:
    with SendClaim(fake_redis, "c", 60) as first:
        with SendClaim(fake_redis, "c", 60) as second:
            assert first and not second
        assert fake_redis.exists("c")  # the one that did not get it released nothing
    assert not fake_redis.exists("c")


def test_a_send_longer_than_the_claim_keeps_it(fake_redis: fakeredis.FakeRedis) -> None:
    claim = SendClaim(fake_redis, "c", 1)
    with claim as held:
        assert held
        time.sleep(2.5)  # two and a half lives of the claim
        assert fake_redis.get("c") == claim.nonce
        with SendClaim(fake_redis, "c", 1) as retry:
            assert not retry
    assert claim.renewals >= 2 and not fake_redis.exists("c")


def test_a_lapsed_claim_taken_by_another_is_not_released_by_the_first(fake_redis: fakeredis.FakeRedis) -> None:
    first = SendClaim(fake_redis, "c", 60)
    with first:
        fake_redis.set("c", "another sender's nonce")  # the first's claim lapsed (its edge froze), a retry took it
    assert fake_redis.get("c") == "another sender's nonce"
