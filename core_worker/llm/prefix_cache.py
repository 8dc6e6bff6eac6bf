"""Snapshots of llama.cpp's KV cache, so a conversation that comes back skips re-reading its history.

One model process serves many sessions.  llama.cpp keeps only the tokens of
the last prompt in its context: when session A's next turn arrives after
session B's, A's whole history is evaluated again, at prompt speed (a 1,000
token history is seconds on a CPU).  After each completion we copy the
context's state (the KV cells in use, ~22 KB per token for a 1.1B model)
keyed by its token ids; before the next completion the snapshot sharing the
longest prefix with the new prompt is restored when it beats what is already
in the context, and llama-cpp-python's own prefix matching then evaluates
only the new tokens.

llama-cpp-python's ``LlamaRAMCache`` is not used: each of its entries also
copies the logits array (n_batch x n_vocab floats: 65 MB for a 32k vocabulary,
311 MB for Qwen's 152k) without counting it against the capacity.
"""

from __future__ import annotations

import ctypes
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["CacheStats", "PrefixCache", "common_prefix"]


def common_prefix(a: npt.NDArray[np.intc], b: npt.NDArray[np.intc]) -> int:
    """Length of the common prefix of two token arrays."""
    n = min(len(a), len(b))
    mismatch = np.flatnonzero(a[:n] != b[:n])
    return int(mismatch[0]) if mismatch.size else n


@dataclass
class _Snapshot:
    ids: npt.NDArray[np.intc]
    state: Any  # ctypes c_uint8 array holding llama_state_get_data's bytes
    size: int


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    tokens_saved: int = 0
    entries: int = 0
    bytes: int = 0


class PrefixCache:
    """LRU of context snapshots, bounded in bytes.  Not thread-safe: the backend's lock guards it."""

    def __init__(self, capacity_bytes: int, *, min_gain_tokens: int = 32) -> None:
        self.capacity_bytes = capacity_bytes
        self.min_gain_tokens = min_gain_tokens
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()
        self._keys = itertools.count()
        self.stats = CacheStats()

    def restore(self, llm: Llama, tokens: list[int]) -> int:
        """Load the snapshot that shares most of ``tokens`` if it beats the live context; tokens reused."""
        import llama_cpp

        prompt = np.asarray(tokens, dtype=np.intc)
        live = common_prefix(llm.input_ids[: llm.n_tokens], prompt)
        best_key, best = None, 0
        for key, snap in self._snapshots.items():
            shared = common_prefix(snap.ids, prompt)
            if shared > best:
                best_key, best = key, shared
        if best_key is None or best < live + self.min_gain_tokens:
            if best <= live:
                self.stats.misses += 1
            return live
        snap = self._snapshots[best_key]
        self._snapshots.move_to_end(best_key)
        if llama_cpp.llama_state_set_data(llm._ctx.ctx, snap.state, snap.size) != snap.size:
            llm.reset()  # a partial restore leaves the context unknown: start clean
            return 0
        llm.input_ids[: len(snap.ids)] = snap.ids
        llm.n_tokens = len(snap.ids)
        llm._requires_eval = True  # restored logits are not the prompt's: generate() re-decodes the tail
        self.stats.hits += 1
        self.stats.tokens_saved += best - live
        return best

    def save(self, llm: Llama) -> None:
        """Snapshot the context after a completion (replacing snapshots it extends)."""
        import llama_cpp

        if self.capacity_bytes <= 0 or llm.n_tokens < self.min_gain_tokens:
            return
        ctx = llm._ctx.ctx
        size = int(llama_cpp.llama_state_get_size(ctx))
        if size > self.capacity_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_get_data(ctx, buffer, size))
        ids = np.array(llm.input_ids[: llm.n_tokens], dtype=np.intc)
        # An earlier turn of the same conversation is (almost) a prefix of this one: this one supersedes it.
        # Almost, because the history is re-rendered from stored text, which can tokenize differently from
        # the tokens the model generated.
        stale = [k for k, s in self._snapshots.items()
                 if common_prefix(s.ids, ids) >= len(s.ids) - self.min_gain_tokens]
        for key in stale:
            del self._snapshots[key]
        self._snapshots[next(self._keys)] = _Snapshot(ids, buffer, written)
        total = sum(s.size for s in self._snapshots.values())
        while total > self.capacity_bytes and self._snapshots:
            _, old = self._snapshots.popitem(last=False)
            total -= old.size
        self.stats.entries, self.stats.bytes = len(self._snapshots), total
