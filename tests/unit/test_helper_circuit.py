"""The circuit breaker's cycle (redis_stores/helper_registry.py): one trial call when half-open, claimed once."""

from __future__ import annotations

import time

import fakeredis
import pytest

from redis_stores.helper_registry import HelperRegistry
from tasks.keys import Keys


@pytest.fixture
def registry(fake_redis: fakeredis.FakeRedis, keys: Keys) -> HelperRegistry:
    return HelperRegistry(fake_redis, keys, heartbeat_interval=5, missed_heartbeats=3,
                          failure_threshold=3, reset_seconds=30)


def open_circuit(registry: HelperRegistry) -> None:
    for _ in range(3):
        registry.record_failure("h", "HTTP 500")


def reset_time_passes(registry: HelperRegistry, keys: Keys) -> None:
    """As if CIRCUIT_RESET_SECONDS went by since the circuit opened."""
    registry.redis.hset(keys.helper_health("h"), "opened_at", repr(time.time() - 31))


def test_three_failures_of_the_helper_open_the_circuit(registry: HelperRegistry) -> None:
    assert registry.record_failure("h", "HTTP 500") == "closed"
    assert registry.record_failure("h", "HTTP 500") == "closed"
    assert registry.record_failure("h", "HTTP 500") == "open"
    assert registry.circuit("h") == "open" and not registry.allow_call("h", "call-1")


def test_refusals_are_answers_they_never_open_the_circuit_and_break_a_run_of_failures(
    registry: HelperRegistry,
) -> None:
    registry.record_failure("h", "HTTP 500")
    registry.record_failure("h", "HTTP 500")
    for _ in range(10):
        registry.record_success("h", refused=True)
    assert registry.record_failure("h", "HTTP 500") == "closed"
    assert registry.circuit("h") == "closed"


def test_peeking_at_a_half_open_circuit_claims_nothing(registry: HelperRegistry, keys: Keys) -> None:
    open_circuit(registry)
    reset_time_passes(registry, keys)
    assert registry.circuit("h") == registry.circuit("h") == "half-open"
    assert registry.allow_call("h", "call-1")  # the core peeked; the call itself still gets the trial


def test_exactly_one_call_gets_the_trial_and_its_own_retry_is_let_through(
    registry: HelperRegistry, keys: Keys
) -> None:
    open_circuit(registry)
    reset_time_passes(registry, keys)
    assert registry.allow_call("h", "call-1")
    assert not registry.allow_call("h", "call-2")
    assert not registry.allow_call("h")  # an anonymous caller never shares a trial
    assert registry.allow_call("h", "call-1")  # the trial's re-try (a first 401 while a secret rotates)


def test_a_trial_that_works_closes_the_circuit(registry: HelperRegistry, keys: Keys) -> None:
    open_circuit(registry)
    reset_time_passes(registry, keys)
    assert registry.allow_call("h", "call-1")
    registry.record_success("h")
    assert registry.circuit("h") == "closed"
    assert registry.allow_call("h", "call-2") and registry.allow_call("h", "call-3")


def test_a_trial_refused_by_the_helper_closes_the_circuit_too(registry: HelperRegistry, keys: Keys) -> None:
    open_circuit(registry)
    reset_time_passes(registry, keys)
    assert registry.allow_call("h", "call-1")
    registry.record_success("h", refused=True)
    assert registry.circuit("h") == "closed"
    assert registry.redis.hget(keys.helper_health("h"), "refused") == "1"


def test_a_trial_that_fails_opens_the_circuit_again_for_a_full_reset_period(
    registry: HelperRegistry, keys: Keys
) -> None:
    open_circuit(registry)
    reset_time_passes(registry, keys)
    assert registry.allow_call("h", "call-1")
    assert registry.record_failure("h", "HTTP 500") == "open"
    assert registry.circuit("h") == "open" and not registry.allow_call("h", "call-1")
    reset_time_passes(registry, keys)
    assert registry.allow_call("h", "call-2")  # the next period's trial is not blocked by the failed one


def test_a_trial_lost_with_its_worker_is_given_to_another_call_once_it_expires(
    registry: HelperRegistry, keys: Keys
) -> None:
    open_circuit(registry)
    reset_time_passes(registry, keys)
    assert registry.allow_call("h", "call-1", trial_seconds=7.2)
    assert registry.redis.ttl(f"{keys.helper_health('h')}:trial") == 8  # the call's timeout and a margin, rounded up
    registry.redis.delete(f"{keys.helper_health('h')}:trial")  # as if those seconds passed
    assert registry.allow_call("h", "call-2")
