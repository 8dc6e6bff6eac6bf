"""The fate bookkeeping of the fault suite counts what it claims to count."""

from __future__ import annotations

import json

import fakeredis
import pytest

from tests.support.fates import FateBook, Run, overlapping_runs
from tests.support.traffic import runs_from_redis


def book_with(sent: dict[str, list[str]], replies: list[str]) -> FateBook:
    book = FateBook()
    for session, ids in sent.items():
        for mid in ids:
            book.accept(session, mid)
    for mid in replies:
        book.reply(mid)
    return book


def test_every_accepted_message_answered_once_in_order_is_exactly_once() -> None:
    tally = book_with({"s1": ["a", "b"], "s2": ["c"]}, ["a", "c", "b"]).tally()
    assert (tally.accepted, tally.answered, tally.lost, tally.duplicates, tally.order_inversions) == (3, 3, (), 0, 0)
    assert tally.exactly_once


def test_a_message_without_reply_is_lost_by_id() -> None:
    tally = book_with({"s1": ["a", "b", "c"]}, ["a", "c"]).tally()
    assert tally.lost == ("b",) and tally.answered == 2 and not tally.exactly_once


def test_repeated_replies_count_as_duplicates() -> None:
    tally = book_with({"s1": ["a", "b"]}, ["a", "a", "b", "a"]).tally()
    assert tally.duplicates == 2 and tally.answered == 2


def test_a_reply_arriving_after_a_later_message_of_its_session_is_an_inversion() -> None:
    tally = book_with({"s1": ["a", "b", "c"], "s2": ["x", "y"]}, ["b", "a", "x", "c", "y"]).tally()
    assert tally.order_inversions == 1


def test_order_across_sessions_does_not_matter() -> None:
    tally = book_with({"s1": ["a", "b"], "s2": ["x", "y"]}, ["x", "a", "y", "b"]).tally()
    assert tally.order_inversions == 0


def test_replies_nobody_was_promised_are_counted_apart() -> None:
    tally = book_with({"s1": ["a"]}, ["a", "ghost"]).tally()
    assert tally.unexpected == 1 and tally.exactly_once


def test_statuses_count_the_first_reply_of_each_message() -> None:
    book = book_with({"s1": ["a", "b"]}, ["a"])
    book.reply("b", "failed")
    assert book.tally().statuses == {"answered": 1, "failed": 1}


def test_outstanding_counts_accepted_ids_still_waiting() -> None:
    assert book_with({"s1": ["a", "b", "c"]}, ["b"]).outstanding() == 2


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ([(0, 1), (1, 2), (2, 3)], 0),  # back to back is fine
        ([(0, 2), (1, 3)], 1),
        ([(0, 10), (1, 2), (3, 4)], 2),
        ([(0, None), (1, 2)], 0),  # a run whose process was killed never finished
    ],
)
def test_overlapping_runs_of_one_session(spans: list[tuple[float, float | None]], expected: int) -> None:
    assert overlapping_runs(Run("s", str(i), start, end) for i, (start, end) in enumerate(spans)) == expected


def test_runs_of_different_sessions_may_overlap() -> None:
    assert overlapping_runs([Run("s1", "a", 0, 2), Run("s2", "b", 1, 3)]) == 0


def test_the_summary_line_has_the_promised_shape() -> None:
    tally = book_with({"s1": ["a", "b"]}, ["a", "b"]).tally()
    line = tally.line("kill-core-worker", "recovered in 1.2s")
    assert line == "faults: kill-core-worker 2/2 answered, 0 duplicates, 0 order inversions, recovered in 1.2s"


def test_the_summary_line_counts_overlapping_runs_when_runs_were_recorded() -> None:
    book = book_with({"s1": ["a"]}, ["a"])
    book.add_runs([Run("s1", "a", 0, 1)])
    assert book.tally().line("x") == "faults: x 1/1 answered, 0 duplicates, 0 order inversions, 0 overlapping runs"


def test_run_records_pair_into_runs_and_a_killed_run_stays_open() -> None:
    client = fakeredis.FakeRedis()
    for event, text, pid, at in [("start", "s1 #0", 10, 1.0), ("end", "s1 #0", 10, 2.0),
                                 ("start", "s1 #1", 11, 3.0),  # its process was killed here
                                 ("start", "s1 #1", 12, 5.0), ("end", "s1 #1", 12, 6.0)]:
        client.rpush("faults:runs", json.dumps({"event": event, "text": text, "pid": pid, "at": at}))
    runs = sorted(runs_from_redis(client), key=lambda r: r.start)
    assert runs == [Run("s1", "s1 #0", 1.0, 2.0), Run("s1", "s1 #1", 3.0, None), Run("s1", "s1 #1", 5.0, 6.0)]
