"""A helper hanging, then dead, then back: timeouts, its circuit, graceful replies, recovery; others unaffected.
One sender flooding a helper with input it refuses: the helper stays available to everyone else.

Real helper processes (the SDK's CLI under gunicorn, as in
tests/integration/test_helpers.py); the scripted backend makes the routing
decision a capable model would.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from tests.support.fates import FateBook
from tests.support.harness import CallbackReceiver, System, wait_until
from tests.support.helper_processes import CALCULATOR, CONVERTER, TOKEN, Helpers
from tests.support.scripted_backend import SCRIPTED
from tests.support.traffic import Load, report, settle, start_system, wait_all_answered

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MakeSystem = Callable[..., System]


@pytest.fixture
def system(make_system: MakeSystem) -> System:
    # Heartbeats may be missed for long: a hung helper stays registered, so its calls time out and trip the circuit.
    return start_system(make_system(LLM_BACKEND=SCRIPTED, HELPER_REGISTRATION_TOKEN=TOKEN,
                                    HELPER_MISSED_HEARTBEATS="600", CIRCUIT_RESET_SECONDS="3"))


def ask(session: str, n: int) -> str:
    return f"/calculate 6 * {n + 7}" if session.startswith("calc") else f"please convert {n + 5} km to mi"


def phase(system: System, book: FateBook, callbacks: CallbackReceiver, name: str) -> dict[str, list[str]]:
    """4 sessions asking the calculator, 4 the converter, 3 messages each; their reply texts by session."""
    before = set(book.accepted)
    Load(system.base_url, book, callbacks.url, sessions=4, per_session=3, prefix=f"calc-{name}-", text_for=ask
         ).start().join()
    Load(system.base_url, book, callbacks.url, sessions=4, per_session=3, prefix=f"conv-{name}-", text_for=ask
         ).start().join()
    wait_all_answered(book, [callbacks], 120, system.logs)
    return {s: [callbacks.for_message(mid)[0].body["text"] for mid in ids]
            for s, ids in book.accepted.items() if s not in before}


def test_a_helper_hanging_then_dead_then_back_gets_graceful_replies_and_recovers(
    system: System, helpers: Helpers, callbacks: CallbackReceiver
) -> None:
    calculator = helpers.start("calculator", CALCULATOR)
    helpers.start("converter", CONVERTER)
    book = FateBook()

    calculator.signal_group(signal.SIGSTOP)  # hanging: connections accepted by the kernel, never answered
    hung = phase(system, book, callbacks, "hung")
    circuit_after_hang = helpers.listed()["calculator"]["health"]["circuit"]
    calculator.signal_group(signal.SIGCONT)
    calculator.kill()  # dead: connections refused
    dead = phase(system, book, callbacks, "dead")
    helpers.start("calculator", CALCULATOR, port=calculator.port)  # type: ignore[attr-defined]
    back_at = time.time()
    wait_until(lambda: helpers.listed()["calculator"]["health"]["circuit"] == "closed", 60, "a closed circuit")
    closed_after = time.time() - back_at
    back = phase(system, book, callbacks, "back")
    tally = settle(book, [callbacks])

    def texts(replies: dict[str, list[str]], kind: str) -> list[str]:
        return [t for s, ts in replies.items() if s.startswith(kind) for t in ts]

    graceful = sum("calculator helper is unavailable" in t for t in texts(hung, "calc") + texts(dead, "calc"))
    report(tally.line("helper-hang-dead-back", f"calculator hung then dead: {graceful}/24 graceful replies, "
                      f"circuit {circuit_after_hang} after the hang; converter 36/36 right throughout; "
                      f"circuit closed {closed_after:.1f}s after the helper came back, then 12/12 right"))
    assert tally.accepted == 72 and tally.exactly_once, (tally, system.logs())
    assert graceful == 24 and circuit_after_hang in ("open", "half-open")  # tripped (half-open once reset time passed)
    assert all("Result of converter.convert_units" in t for phase_ in (hung, dead, back) for t in texts(phase_, "conv"))
    assert all(str(6 * (n + 7)) in t for s, ts in back.items() if s.startswith("calc") for n, t in enumerate(ts))


def test_one_sender_flooding_a_helper_with_bad_input_leaves_it_working_for_everyone_else(
    system: System, helpers: Helpers, callbacks: CallbackReceiver
) -> None:
    """40 refused inputs from one sender while 4 others use the same helper: the circuit stays closed."""
    helpers.start("calculator", CALCULATOR)
    book = FateBook()
    flood = Load(system.base_url, book, callbacks.url, sessions=1, per_session=40, prefix="flood-",
                 text_for=lambda _session, _n: "/calculate 1/0")
    others = Load(system.base_url, book, callbacks.url, sessions=4, per_session=3, prefix="calc-", text_for=ask)
    flood.start()
    others.start()
    flood.join()
    others.join()
    wait_all_answered(book, [callbacks], 180, system.logs)
    tally = settle(book, [callbacks])
    replies = {s: [callbacks.for_message(mid)[0].body["text"] for mid in ids] for s, ids in book.accepted.items()}
    right = sum(str(6 * (n + 7)) in t for s, ts in replies.items() if s.startswith("calc") for n, t in enumerate(ts))
    refused = sum(t == "The calculator couldn't do that: division by zero." for t in replies["flood-00"])
    slowed = sum(t.startswith("You are asking my helpers too often") for t in replies["flood-00"])
    health = helpers.listed()["calculator"]["health"]
    report(tally.line("helper-bad-input-flood", f"one sender floods a helper with bad input: other senders answered "
                      f"{right}/12; the flooder got {refused} refusals in the helper's words and {slowed} "
                      f"slow-downs (RATE_LIMIT_HELPER_CALLS={system.env.get('RATE_LIMIT_HELPER_CALLS', '30/minute')}); "
                      f"circuit {health['circuit']}, {health['consecutive_failures']} consecutive failures"))
    assert tally.accepted == 52 and tally.exactly_once, (tally, system.logs())
    assert right == 12, replies
    # 30 calls a minute per sender by default: the rest of the flood never reaches the helper.
    assert refused >= 30 and refused + slowed == 40, replies["flood-00"]
    assert health["circuit"] == "closed" and health["consecutive_failures"] == 0
