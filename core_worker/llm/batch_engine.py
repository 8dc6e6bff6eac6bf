"""Continuous batching: up to ``parallel`` conversations generated together on one llama.cpp model.

On a CPU a decode step costs about one read of the weights, whatever the number of sequences in it, so
``parallel`` conversations decoded in one ``llama_decode`` cost little more than one (measured:
docs/benchmarks.md, "Concurrency").  One thread owns the llama.cpp context and runs the steps; callers
on other threads submit a :class:`Job` and wait on it.

- **Continuous:** a job that arrives joins the running batch at the next step; one that ends leaves at
  once, its slot free for the next job.  Nobody waits for a batch to drain.
- **Chunked prompts:** while others generate, a newcomer's prompt is read ``prefill_chunk`` tokens per
  step, in the same ``llama_decode`` as their next tokens, so their streams keep flowing.
- **Memory:** one context of ``parallel`` x ``n_ctx_seq`` cells, not unified: each sequence has its own
  ``n_ctx_seq`` cells, so no conversation can take another's room.
- **Prefix reuse:** a finished sequence keeps its cache in its slot; a newcomer takes the free slot
  sharing the longest prefix with its prompt (its own previous turn, usually) and reads only the rest.
  Slots given away are snapshotted first (core_worker/llm/prefix_cache.py) for the conversation's return.
- **Per-sequence sampling:** each job has its own sampler chain, its own grammar included, built as
  llama-cpp-python's ``create_completion`` builds it (penalties, grammar, then greedy or top-k/p).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .base import GenerationError, ModelLoadError, apply_stop, hold_back_stop
from .prefix_cache import PrefixCache, common_prefix

__all__ = ["BatchEngine", "Cancelled", "Job", "JobResult", "Sampling", "run_job", "set_fields"]

log = logging.getLogger(__name__)

SHARE_MIN_TOKENS = 16  # a shorter shared prefix is read rather than copied from another sequence
PENALTY_LAST_N = 64  # llama-cpp-python's last_n_tokens_size default, so sampling matches create_completion's
MIN_P = 0.05
TYPICAL_P = 1.0


class Cancelled(GenerationError):
    """The job was cancelled by its caller (its lease was lost, its time ran out)."""


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_k: int
    top_p: float
    repeat_penalty: float
    seed: int


@dataclass(frozen=True)
class JobResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    reused_tokens: int  # prompt tokens whose cache was already there (slot or snapshot)


@dataclass
class Job:
    """One generation. ``grammar`` is GBNF text (root rule ``root``) or None."""

    tokens: list[int]
    max_tokens: int
    sampling: Sampling
    stops: list[str]
    grammar: str | None = None
    # Whose conversation this is (its session), and how many leading tokens any conversation may share (the
    # system prompt's): another owner's cache is reused only that far, so nobody's history, nor whether a
    # guess matches it (a faster first token), is ever another person's to find.
    owner: str = ""
    public: int = 0
    generated: list[int] = field(default_factory=list)
    result: JobResult | None = None
    error: BaseException | None = None
    cancelled: bool = False
    first_token_at: float | None = None
    # Engine steps, so tests can check the schedule without clocks: ``steps`` when the job got its slot (its
    # first decode is the next step), the step that sampled each generated token, and the step it ended in.
    admitted_step: int | None = None
    token_steps: list[int] = field(default_factory=list)
    ended_step: int | None = None
    _done: threading.Event = field(default_factory=threading.Event)
    _progress: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a new token or the end; True if either came.  The engine's thread wakes
        its waiter while it is inside the next ``llama_decode``, which holds no GIL, so this costs it nothing."""
        if self._done.is_set():
            return True
        came = self._progress.wait(timeout)
        self._progress.clear()
        return came or self._done.is_set()

    def _finish(self, result: JobResult | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self._done.set()
        self._progress.set()


@dataclass
class _Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV is in this sequence, in order
    job: Job | None = None
    prompt_at: int = 0  # next prompt token to read
    sampler: Any = None
    last_token: int | None = None  # sampled, not yet decoded
    text: bytes = b""
    reused: int = 0
    used_at: float = 0.0
    owner: str = ""  # whose conversation the cached tokens are

    @property
    def reading(self) -> bool:
        return self.job is not None and self.prompt_at < len(self.job.tokens)


class BatchEngine:
    """Owns a llama.cpp context of ``parallel`` sequences and the one thread that decodes it."""

    def __init__(self, model: Any, *, parallel: int, n_ctx_seq: int, n_threads: int, prefill_chunk: int = 64,
                 n_batch: int = 512, snapshot_bytes: int = 0, detokenize: Callable[[list[int]], bytes]) -> None:
        import llama_cpp

        self.parallel, self.n_ctx_seq = parallel, n_ctx_seq
        self.prefill_chunk = max(1, min(prefill_chunk, n_batch))
        self.n_batch = max(n_batch, parallel + self.prefill_chunk)
        self._model = model  # llama_cpp._internals.LlamaModel
        self._vocab = model.vocab
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._detokenize = detokenize
        params = set_fields(
            llama_cpp.llama_context_default_params(), n_ctx=parallel * n_ctx_seq, n_batch=self.n_batch,
            n_ubatch=self.n_batch, n_seq_max=parallel, n_threads=n_threads, n_threads_batch=n_threads,
            kv_unified=False,  # each sequence its own n_ctx_seq cells
            no_perf=True,
        )
        ctx = llama_cpp.llama_init_from_model(model.model, params)
        if ctx is None:
            raise GenerationError(f"llama.cpp could not create a context of {parallel} x {n_ctx_seq} tokens")
        self._ctx = ctx
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._slots = [_Slot(seq_id=i) for i in range(parallel)]
        self.snapshots = PrefixCache(snapshot_bytes) if snapshot_bytes > 0 else None
        self._pending: deque[Job] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self.steps = 0
        self.prompt_tokens = 0  # read or reused, over every job
        self.reused_tokens = 0  # of those, found in a slot or a snapshot instead of read
        self.shared_tokens = 0  # of those, the system prompt copied from another conversation's sequence
        self._thread = threading.Thread(target=self._run, name="llm-batch", daemon=True)
        self._thread.start()

    # -- callers' side -------------------------------------------------------
    def submit(self, job: Job) -> Job:
        if len(job.tokens) + job.max_tokens > self.n_ctx_seq:
            raise GenerationError(f"prompt ({len(job.tokens)}) + reply ({job.max_tokens}) tokens exceed the "
                                  f"{self.n_ctx_seq} of a conversation's context")
        with self._wake:
            if self._closed:
                raise GenerationError("backend is closed")
            self._pending.append(job)
            self._wake.notify()
        return job

    def text_of(self, job: Job) -> str:
        """The reply so far, without a tail that may be the start of a stop string (for partials)."""
        raw = self._detokenize(list(job.generated)) if job.generated else b""
        return hold_back_stop(raw.decode("utf-8", errors="ignore"), job.stops)

    def close(self) -> None:
        import llama_cpp

        with self._wake:
            if self._closed:  # freed already (or being freed): a second llama_batch_free aborts the process
                return
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)
        if self._thread.is_alive():  # a decode that never ends: leave the memory rather than free it under it
            log.error("the batch engine's thread did not stop; its context is not freed")
            return
        for slot in self._slots:
            self._free_sampler(slot)
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    # -- the engine's thread -------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._closed and not self._pending and not self._active():
                        self._wake.wait(1.0)
                    if self._closed:
                        break
                    self._admit()
                self._drop_cancelled()
                if self._active():
                    self._step()
        except BaseException as exc:  # a failed decode ends every job here with the error, none hangs
            log.exception("the batch engine stopped")
            self._fail_all(GenerationError(f"llama.cpp generation failed: {exc}"))
        self._fail_all(GenerationError("backend is closed"))

    def _active(self) -> list[_Slot]:
        return [s for s in self._slots if s.job is not None]

    def _admit(self) -> None:
        """Give free slots to waiting jobs, each the slot that already holds most of its prompt."""
        while self._pending:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            job = self._pending.popleft()
            if job.cancelled:
                job._finish(error=Cancelled("cancelled before it started"))
                continue
            slot, keep = _cheapest_slot(free, job)
            try:
                self._assign(slot, job, keep)
            except Exception as exc:  # this job's own problem (its grammar): it alone fails
                slot.job = None
                job._finish(error=exc if isinstance(exc, GenerationError) else GenerationError(str(exc)))

    def _assign(self, slot: _Slot, job: Job, keep: int) -> None:
        import llama_cpp

        if self.snapshots is not None:
            if len(slot.cached) - keep >= self.snapshots.min_gain_tokens:  # another conversation's: keep a copy
                self.snapshots.save(self._ctx, slot.seq_id, slot.cached, slot.owner)
            keep = min(self.snapshots.restore(self._ctx, slot.seq_id, job.tokens, keep, job.owner),
                       len(job.tokens) - 1)
        keep = self._share_public_prefix(slot, job, keep)
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
        slot.cached, slot.owner = list(job.tokens[:keep]), job.owner
        slot.job, slot.prompt_at, slot.reused = job, keep, keep
        job.admitted_step = self.steps
        self.prompt_tokens += len(job.tokens)
        self.reused_tokens += keep
        slot.last_token, slot.text = None, b""
        slot.sampler = self._sampler(job)

    def _share_public_prefix(self, slot: _Slot, job: Job, keep: int) -> int:
        """Copy the system prompt's cache from another sequence that holds it when ``slot`` lacks it (a slot
        never used, or one whose last conversation had another system prompt): every conversation starts
        with it, and reading it again per slot cost a newcomer's first token ~0.3 s per 100 tokens here.
        llama.cpp copies between the sequences of an unshared cache only whole (``seq_cp`` of all positions),
        so the donor's whole sequence is copied and the copy cut back to the prefix."""
        import llama_cpp

        wanted = min(job.public, len(job.tokens) - 1)
        if wanted - keep < SHARE_MIN_TOKENS:
            return keep
        donors = [(min(common_prefix(d.cached, job.tokens), wanted), d) for d in self._slots if d is not slot]
        shared, donor = max(donors, key=lambda item: item[0], default=(0, None))
        if donor is None or shared - keep < SHARE_MIN_TOKENS:
            return keep
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._memory, donor.seq_id, slot.seq_id, -1, -1)
        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, shared, -1)
        self.shared_tokens += shared
        return shared

    def _sampler(self, job: Job) -> Any:
        import llama_cpp

        s = job.sampling
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        add(chain, llama_cpp.llama_sampler_init_penalties(self._n_vocab, PENALTY_LAST_N, s.repeat_penalty, 0.0, 0.0))
        if job.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(self._vocab, job.grammar.encode("utf-8"), b"root")
            if not grammar:  # a NULL pointer: ctypes returns it as a false LP_llama_sampler, not None
                llama_cpp.llama_sampler_free(chain)
                raise GenerationError("llama.cpp refused the grammar")
            add(chain, grammar)
        if s.temperature == 0.0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
            add(chain, llama_cpp.llama_sampler_init_typical(TYPICAL_P, 1))
            add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
            add(chain, llama_cpp.llama_sampler_init_min_p(MIN_P, 1))
            add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
            add(chain, llama_cpp.llama_sampler_init_dist(s.seed))
        return chain

    def _free_sampler(self, slot: _Slot) -> None:
        import llama_cpp

        if slot.sampler is not None:
            llama_cpp.llama_sampler_free(slot.sampler)
            slot.sampler = None

    def _drop_cancelled(self) -> None:
        for slot in self._active():
            if slot.job is not None and slot.job.cancelled:
                self._release(slot, error=Cancelled("cancelled while generating"))

    def _step(self) -> None:
        """One ``llama_decode``: the next token of every generating job plus a chunk of prompts being read."""
        import llama_cpp

        batch, n = self._batch, 0
        outputs: list[tuple[_Slot, int]] = []  # (slot, batch index whose logits it samples)

        def put(slot: _Slot, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n] = token, len(slot.cached)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq_id
            batch.logits[n] = logits
            slot.cached.append(token)
            if logits:
                outputs.append((slot, n))
            n += 1

        generating = [s for s in self._active() if not s.reading]
        for slot in generating:
            assert slot.last_token is not None
            put(slot, slot.last_token, True)
        budget = self.prefill_chunk if generating else self.n_batch - n
        for slot in sorted((s for s in self._active() if s.reading), key=lambda s: s.used_at):
            job = slot.job
            assert job is not None
            take = min(len(job.tokens) - slot.prompt_at, budget)
            for i in range(take):
                put(slot, job.tokens[slot.prompt_at + i], slot.prompt_at + i == len(job.tokens) - 1)
            slot.prompt_at += take
            budget -= take
            if budget <= 0:
                break
        batch.n_tokens = n
        code = llama_cpp.llama_decode(self._ctx, batch)
        self.steps += 1
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        now = time.monotonic()
        for slot, index in outputs:
            slot.used_at = now
            self._sample(slot, index)

    def _sample(self, slot: _Slot, index: int) -> None:
        import llama_cpp

        job = slot.job
        assert job is not None
        token = int(llama_cpp.llama_sampler_sample(slot.sampler, self._ctx, index))
        if job.first_token_at is None:
            job.first_token_at = time.monotonic()
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._release(slot, finish="stop")
            return
        job.generated.append(token)
        job.token_steps.append(self.steps)
        slot.text += self._detokenize([token])
        text, stopped = apply_stop(slot.text.decode("utf-8", errors="ignore"), job.stops)
        if stopped:
            self._release(slot, finish="stop", text=text)
        elif len(job.generated) >= job.max_tokens:
            self._release(slot, finish="length", text=text)
        else:
            slot.last_token = token
            job._progress.set()

    def _release(self, slot: _Slot, *, finish: str = "stop", text: str | None = None,
                 error: BaseException | None = None) -> None:
        """End the slot's job; the slot keeps the tokens it decoded for the next turn of that conversation."""
        job = slot.job
        assert job is not None
        self._free_sampler(slot)
        slot.job, slot.last_token = None, None
        job.ended_step = self.steps
        if error is not None:
            job._finish(error=error)
            return
        if text is None:
            text = apply_stop(slot.text.decode("utf-8", errors="ignore"), job.stops)[0]
        job._finish(JobResult(text=text, prompt_tokens=len(job.tokens), completion_tokens=len(job.generated),
                              finish_reason=finish, reused_tokens=slot.reused))

    def _fail_all(self, error: GenerationError) -> None:
        with self._wake:
            pending, self._pending = list(self._pending), deque()
        for job in pending:
            job._finish(error=error)
        for slot in self._active():
            self._release(slot, error=error)


def _cheapest_slot(free: list[_Slot], job: Job) -> tuple[_Slot, int]:
    """The free slot where ``job`` costs least: the prompt tokens still to read plus the cached tokens of
    another conversation thrown away (it would read them again on its return); then the least recently used.
    A slot sharing only the system prompt with a newcomer is not worth another conversation's history, and
    another owner's slot is reused no further than the public prefix (``Job.owner``)."""
    tokens = job.tokens
    best: tuple[int, float, _Slot, int] | None = None
    for slot in free:
        keep = min(common_prefix(slot.cached, tokens), len(tokens) - 1)
        if slot.owner != job.owner:
            keep = min(keep, job.public)
        cost = (len(tokens) - keep) + (len(slot.cached) - keep)
        if best is None or (cost, slot.used_at) < (best[0], best[1]):
            best = (cost, slot.used_at, slot, keep)
    assert best is not None
    return best[2], best[3]


def set_fields(params: Any, **values: Any) -> Any:
    """Set fields of a llama.cpp params struct, refusing a name it lacks: ctypes would take a misspelt or
    renamed field (``use_mmap`` became ``load_mode``) as a plain attribute, and llama.cpp would ignore it."""
    known = {name for name, *_ in type(params)._fields_}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelLoadError(f"this llama-cpp-python has no {', '.join(unknown)} in {type(params).__name__}")
    for name, value in values.items():
        setattr(params, name, value)
    return params


def run_job(engine: BatchEngine, job: Job, *, on_progress: Callable[[Callable[[], str]], None] | None = None,
            poll: float = 0.5) -> JobResult:
    """Submit ``job`` and wait for it in this thread, offering the text so far to ``on_progress`` after each
    token (and every ``poll`` seconds while it waits for a slot; the callback throttles itself and checks the
    caller's lease).  Whatever ``on_progress`` raises cancels the job and is raised here, as is an exception
    raised in this thread while it waits (a time limit)."""
    engine.submit(job)
    try:
        while not job.done:
            job.wait(poll)
            if on_progress is not None and not job.done:
                on_progress(lambda: engine.text_of(job))
    except BaseException:
        job.cancel()
        with engine._wake:
            engine._wake.notify()
        raise
    if job.error is not None:
        raise job.error
    assert job.result is not None
    return job.result
