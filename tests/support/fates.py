"""The fate of every message of a fault scenario, checked by id.

A scenario records each message the edge accepted (2xx) under its session,
in the order it was sent, and every reply that reached a receiver (by
``webhook-id`` = message id).  ``FateBook.tally()`` then counts, per the
promise "every message accepted with a 2xx is answered exactly once, in order
per session":

- answered: accepted ids with at least one reply; lost: accepted ids with none;
- duplicates: replies beyond the first for an id;
- order inversions: within a session, a reply that arrived after the reply of
  a message sent later (counted once per late reply);
- overlapping runs: two generations of one session that ran at the same time
  (from run records the fault backend writes), which the session lease forbids.

Pure bookkeeping, no I/O: unit-tested in ``test_fates.py``.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["FateBook", "Run", "Tally", "overlapping_runs"]


@dataclass(frozen=True)
class Run:
    """One generation of one message, as the backend saw it (``end`` is None if its process died)."""

    session_id: str
    label: str
    start: float
    end: float | None


@dataclass(frozen=True)
class Tally:
    accepted: int
    answered: int
    lost: tuple[str, ...]
    duplicates: int
    order_inversions: int
    overlapping_runs: int
    runs: int  # generations recorded (0: the scenario's backend does not record runs)
    unexpected: int  # replies for ids nobody was told were accepted (allowed: a cut-off request may still land)
    statuses: dict[str, int]

    @property
    def exactly_once(self) -> bool:
        return not self.lost and self.duplicates == 0 and self.order_inversions == 0 and self.overlapping_runs == 0

    def line(self, scenario: str, extra: str = "") -> str:
        """The summary line every scenario prints: ``faults: <name> 200/200 answered, 0 duplicates, ...``."""
        text = (f"faults: {scenario} {self.answered}/{self.accepted} answered, {self.duplicates} duplicates, "
                f"{self.order_inversions} order inversions")
        if self.runs:
            text += f", {self.overlapping_runs} overlapping runs"
        return f"{text}, {extra}" if extra else text


@dataclass
class FateBook:
    """Thread-safe: sender threads accept while the receiver thread records replies."""

    accepted: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    replies: list[tuple[str, str]] = field(default_factory=list)  # (message id, status) in arrival order
    refused: Counter[str] = field(default_factory=Counter)  # why sends got no 2xx ("503", "connection error")
    runs: list[Run] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def accept(self, session_id: str, message_id: str) -> None:
        with self._lock:
            self.accepted[session_id].append(message_id)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1

    def reply(self, message_id: str, status: str = "answered") -> None:
        with self._lock:
            self.replies.append((message_id, status))

    def add_runs(self, runs: Iterable[Run]) -> None:
        with self._lock:
            self.runs.extend(runs)

    @property
    def accepted_ids(self) -> list[str]:
        return [mid for ids in self.accepted.values() for mid in ids]

    def replies_for(self, message_id: str) -> int:
        return sum(1 for mid, _ in self.replies if mid == message_id)

    def outstanding(self) -> int:
        """Accepted ids still without a reply."""
        seen = {mid for mid, _ in self.replies}
        return sum(1 for mid in self.accepted_ids if mid not in seen)

    def tally(self) -> Tally:
        with self._lock:
            counts = Counter(mid for mid, _ in self.replies)
            accepted = self.accepted_ids
            known = set(accepted)
            statuses: Counter[str] = Counter()
            first_status: dict[str, str] = {}
            for mid, status in self.replies:
                first_status.setdefault(mid, status)
            for mid in accepted:
                if mid in first_status:
                    statuses[first_status[mid]] += 1
            return Tally(
                accepted=len(accepted),
                answered=sum(1 for mid in accepted if counts[mid]),
                lost=tuple(mid for mid in accepted if not counts[mid]),
                duplicates=sum(n - 1 for mid, n in counts.items() if mid in known and n > 1),
                order_inversions=sum(self._inversions(ids) for ids in self.accepted.values()),
                overlapping_runs=overlapping_runs(self.runs),
                runs=len(self.runs),
                unexpected=sum(1 for mid in counts if mid not in known),
                statuses=dict(statuses),
            )

    def _inversions(self, sent: list[str]) -> int:
        """Replies of one session that arrived after a reply to a message sent later."""
        rank = {mid: i for i, mid in enumerate(sent)}
        latest, inversions, seen = -1, 0, set()
        for mid, _ in self.replies:
            if mid not in rank or mid in seen:
                continue
            seen.add(mid)
            if rank[mid] < latest:
                inversions += 1
            latest = max(latest, rank[mid])
        return inversions


def overlapping_runs(runs: Iterable[Run]) -> int:
    """Pairs of finished runs of the same session whose time spans intersect."""
    by_session: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.end is not None:
            by_session[run.session_id].append(run)
    overlaps = 0
    for session_runs in by_session.values():
        session_runs.sort(key=lambda r: r.start)
        for i, run in enumerate(session_runs):
            for later in session_runs[i + 1:]:
                if later.start >= (run.end or run.start):
                    break
                overlaps += 1
    return overlaps
