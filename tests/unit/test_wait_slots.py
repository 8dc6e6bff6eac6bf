"""Long polls get a bounded share of the edge's threads (edge/waits.py)."""

from __future__ import annotations

import pytest

from edge.errors import TooManyRequests
from edge.waits import WaitSlots
from tasks.settings import SettingsError, load_settings


def test_one_client_holds_at_most_its_share_and_others_still_get_slots() -> None:
    slots = WaitSlots(total=4, per_client=2)
    with slots.hold("10.0.0.1"), slots.hold("10.0.0.1"):
        with pytest.raises(TooManyRequests) as refused, slots.hold("10.0.0.1"):
            pass
        assert "LONG_POLL_PER_CLIENT=2" in refused.value.error and refused.value.retry_after == 1
        with slots.hold("10.0.0.2"):
            assert slots.waiting() == 3
    assert slots.waiting() == 0 and slots.clients() == 0


def test_the_total_is_a_bound_across_clients() -> None:
    slots = WaitSlots(total=2, per_client=2)
    with slots.hold("a"), slots.hold("b"):
        with pytest.raises(TooManyRequests) as refused, slots.hold("c"):
            pass
        assert "LONG_POLL_SLOTS" in refused.value.error
    with slots.hold("c"):
        assert slots.waiting() == 1


def test_a_wait_that_raises_gives_its_slot_back_and_the_client_table_stays_bounded() -> None:
    slots = WaitSlots(total=3, per_client=1)
    for n in range(1000):
        with pytest.raises(ConnectionError), slots.hold(f"client-{n}"):
            raise ConnectionError("redis went away mid-wait")
    assert slots.waiting() == 0 and slots.clients() == 0


def test_waits_get_half_the_threads_by_default_and_never_all_of_them() -> None:
    assert load_settings({}).wait_slots == 8  # EDGE_THREADS 16
    assert load_settings({"EDGE_THREADS": "8"}).wait_slots == 4
    assert load_settings({"EDGE_THREADS": "8", "LONG_POLL_SLOTS": "7"}).wait_slots == 7
    for bad in ({"EDGE_THREADS": "8", "LONG_POLL_SLOTS": "8"}, {"LONG_POLL_PER_CLIENT": "0"}, {"EDGE_THREADS": "1"},
                {"LONG_POLL_SLOTS": "-1"}):
        with pytest.raises(SettingsError):
            load_settings(bad)
