"""Snapshots of one sequence's KV cache, so a conversation that comes back skips re-reading its history.

The batch engine (core_worker/llm/batch_engine.py) keeps ``LLM_PARALLEL`` sequences in one llama.cpp
context, and a finished sequence keeps its cache in its slot until another conversation needs the slot.
A conversation whose slot was taken meanwhile would have its whole history read again at prompt speed (a
1,000-token history is seconds on a CPU).  So when a slot is given away, the sequence it held is copied
out (``llama_state_seq_get_data``: the KV cells of that sequence only, ~22 KB per token for a 1.1B model)
keyed by its token ids, and a newcomer whose prompt shares a longer prefix with a snapshot than with any
free slot has it copied back into its slot (``llama_state_seq_set_data``) before its prompt is read.

Bounded in bytes (``LLM_PROMPT_CACHE_MB``), least recently used first out.  Not thread-safe: only the
engine's thread touches it.
"""

from __future__ import annotations

import ctypes
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["CacheStats", "PrefixCache", "common_prefix"]


def common_prefix(a: npt.NDArray[np.intc] | Sequence[int], b: npt.NDArray[np.intc] | Sequence[int]) -> int:
    """Length of the common prefix of two token arrays."""
    a, b = np.asarray(a, dtype=np.intc), np.asarray(b, dtype=np.intc)
    n = min(len(a), len(b))
    mismatch = np.flatnonzero(a[:n] != b[:n])
    return int(mismatch[0]) if mismatch.size else n


@dataclass
class _Snapshot:
    ids: npt.NDArray[np.intc]
    state: Any  # ctypes c_uint8 array holding llama_state_seq_get_data's bytes
    size: int
    owner: str  # whose conversation: only its owner's prompts are matched against it


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    tokens_saved: int = 0
    entries: int = 0
    bytes: int = 0


class PrefixCache:
    """LRU of per-sequence snapshots, bounded in bytes."""

    def __init__(self, capacity_bytes: int, *, min_gain_tokens: int = 32) -> None:
        self.capacity_bytes = capacity_bytes
        self.min_gain_tokens = min_gain_tokens
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
        self._keys = itertools.count()
        self.stats = CacheStats()

    def best(self, tokens: Sequence[int], owner: str = "") -> tuple[int | None, int]:
        """The snapshot of ``owner`` sharing the longest prefix with ``tokens``: (key, shared tokens)."""
        best_key, best = None, 0
        for key, snap in self._snapshots.items():
            if snap.owner != owner:
                continue
            shared = common_prefix(snap.ids, tokens)
            if shared > best:
                best_key, best = key, shared
        return best_key, best

    def restore(self, ctx: Any, seq_id: int, tokens: Sequence[int], live: int, owner: str = "") -> int:
        """Copy the best snapshot into ``seq_id`` if it beats the ``live`` tokens the slot already shares with
        ``tokens`` by ``min_gain_tokens``; the tokens now valid in the sequence (``live`` when not restored)."""
        import llama_cpp

        key, shared = self.best(tokens, owner)
        if key is None or shared < live + self.min_gain_tokens:
            if shared <= live:
                self.stats.misses += 1
            return live
        snap = self._snapshots[key]
        self._snapshots.move_to_end(key)
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq_id, -1, -1)
        if llama_cpp.llama_state_seq_set_data(ctx, snap.state, snap.size, seq_id) != snap.size:
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(ctx), seq_id, -1, -1)
            return 0  # a partial restore leaves the sequence unknown: start it clean
        self.stats.hits += 1
        self.stats.tokens_saved += shared - live
        return min(shared, len(snap.ids))

    def save(self, ctx: Any, seq_id: int, ids: Sequence[int], owner: str = "") -> None:
        """Snapshot sequence ``seq_id`` (holding ``ids``) before its slot is given to another conversation."""
        import llama_cpp

        if self.capacity_bytes <= 0 or len(ids) < self.min_gain_tokens:
            return
        size = int(llama_cpp.llama_state_seq_get_size(ctx, seq_id))
        if size <= 0 or size > self.capacity_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq_id))
        if written <= 0:
            return
        array = np.array(ids, dtype=np.intc)
        # An earlier turn of the same conversation is (almost) a prefix of this one: this one supersedes it.
        # Almost, because the history is re-rendered from stored text, which can tokenize differently from
        # the tokens the model generated.
        stale = [k for k, s in self._snapshots.items()
                 if s.owner == owner and common_prefix(s.ids, array) >= len(s.ids) - self.min_gain_tokens]
        for key in stale:
            del self._snapshots[key]
        self._snapshots[next(self._keys)] = _Snapshot(array, buffer, written, owner)
        total = sum(s.size for s in self._snapshots.values())
        while total > self.capacity_bytes and self._snapshots:
            _, old = self._snapshots.popitem(last=False)
            total -= old.size
        self.stats.entries, self.stats.bytes = len(self._snapshots), total
