"""A helper hanging, then dead, then back: timeouts, its circuit, graceful replies, recovery; others unaffected.

Real helper processes (the SDK's CLI under gunicorn, as in
tests/integration/test_helpers.py); the scripted backend makes the routing
decision a capable model would.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator

import pytest

from tests.faults.fates import FateBook
from tests.faults.traffic import Load, report, settle, start_system, wait_all_answered
from tests.integration.harness import CallbackReceiver, System, wait_until
from tests.integration.test_helpers import SCRIPTED, TOKEN, Helpers

pytestmark = [pytest.mark.faults, pytest.mark.integration]

MakeSystem = Callable[..., System]
CALCULATOR, CONVERTER = "examples/helpers/calculator.py:helper", "examples/helpers/converter.py:helper"


@pytest.fixture
def system(make_system: MakeSystem) -> System:
    # Heartbeats may be missed for long: a hung helper stays registered, so its calls time out and trip the circuit.
    return start_system(make_system(LLM_BACKEND=SCRIPTED, HELPER_REGISTRATION_TOKEN=TOKEN,
                                    HELPER_MISSED_HEARTBEATS="600", CIRCUIT_RESET_SECONDS="3"))


@pytest.fixture
def helpers(system: System) -> Iterator[Helpers]:
    started = Helpers(system)
    yield started
    for proc in started.procs.values():
        proc.signal_group(signal.SIGCONT)
    started.stop()


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
