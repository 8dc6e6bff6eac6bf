"""Answering the messages of one session, in order, exactly once.

``SessionProcessor.run(session_id, message_id)`` is what a ``handle_message``
task does: take the session's lease, answer the inbox head until the inbox
is empty (or the time budget is spent), release.  The task for a message
keeps retrying until that message has left the inbox, so every admitted
message is answered even if the worker holding its session dies.

Each step is safe to repeat after a crash at any point:
- a head that is already answered/failed is only re-delivered and popped;
- a head that crashed its worker ``max_attempts`` times is failed as poison;
- the delivery task is idempotent (``webhook-id`` = message id, a done-flag).
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from core_worker.conversation import build_messages, prompt_budget
from core_worker.helper_calls import call_deadline
from core_worker.helper_flow import Decision, HelperFlow, call_outcome, failure_text, refusal_note, result_note
from core_worker.llm import LLMBackend
from core_worker.llm.base import Progress, chat_with_progress, generating_for
from core_worker.llm.model_process import generating_alone
from core_worker.routing import ToolCall
from core_worker.sessions import Lease, LeaseLost, SessionStore, Turn
from core_worker.streaming import PartialPublisher
from redis_stores.deadletters import DeadLetters
from redis_stores.messages import TERMINAL, MessageRecord, MessageStore, public_error
from tasks.enqueue import QueuedTask
from tasks.keys import Keys
from tasks.schemas import Envelope, Reply, ReplyRoute, utcnow_iso
from tasks.settings import Settings
from telemetry.logs import bind_message

__all__ = ["LeaseKeeper", "SessionProcessor"]

log = logging.getLogger(__name__)

# The lease of the session this thread works on, and whether it was lost: a generation under way for a
# session whose lease went to another worker is cancelled (its writes would be refused anyway).
_lease_lost: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("lease_lost", default=None)


def _guarded(stream: Progress | None, lease: Lease | None) -> Progress | None:
    """The generation's progress callback: it raises LeaseLost once the lease is lost, which cancels the
    generation, then hands the text to the partial stream (if the channel shows partials)."""
    lost = _lease_lost.get()
    if lost is None:
        return stream

    def progress(text_so_far: Callable[[], str]) -> None:
        if lost.is_set():
            raise LeaseLost(f"{lease.session_id if lease else '?'}: lease lost while generating; cancelled")
        if stream is not None:
            stream(text_so_far)

    return progress


class LeaseKeeper:
    """Renews a lease from a background thread while the model works (it releases the GIL)."""

    def __init__(self, sessions: SessionStore, lease: Lease, interval: float) -> None:
        self.sessions, self.lease, self.interval = sessions, lease, interval
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease.session_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.sessions.renew(self.lease):
                    self.lost.set()
                    return
            except Exception:  # Redis blip: the next tick tries again; fencing protects writes
                log.warning("lease renewal failed for %s", self.lease.session_id, exc_info=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class SessionProcessor:
    settings: Settings
    keys: Keys
    messages: MessageStore
    sessions: SessionStore
    llm: Callable[[], LLMBackend]
    deliver: Callable[[dict[str, Any]], QueuedTask]  # the delivery task to queue (atomically, by the session)
    dead_letters: DeadLetters
    helpers: HelperFlow | None = None
    call_helper: Callable[[str, str, dict[str, Any]], None] = lambda *_: None
    partials: PartialPublisher | None = None  # shows replies while they are written (core_worker/streaming.py)

    def run(self, session_id: str, message_id: str) -> bool:
        """Work the session if we can; True once ``message_id`` is no longer waiting."""
        lease = self.sessions.acquire(session_id)
        if lease is None:
            return not self.is_waiting(session_id, message_id)
        if lease.head is None:
            return self.sessions.release(lease, message_id) is None
        budget_end = time.monotonic() + self.settings.task_soft_time_limit / 2
        try:
            with LeaseKeeper(self.sessions, lease, self.settings.session_lock_seconds / 3) as keeper:
                watching = _lease_lost.set(keeper.lost)
                try:
                    head: str | None = lease.head
                    while head is not None and time.monotonic() < budget_end:
                        head = self._process_head(lease, head)
                finally:
                    _lease_lost.reset(watching)
        finally:
            position = self.sessions.release(lease, message_id)
        return position is None

    def is_waiting(self, session_id: str, message_id: str) -> bool:
        return self.position(session_id, message_id) is not None

    def position(self, session_id: str, message_id: str) -> int | None:
        pos = self.messages.redis.lpos(self.keys.session_inbox(session_id), message_id)
        return None if pos is None else int(pos)  # type: ignore[arg-type]

    def retry_delay(self, session_id: str, message_id: str) -> float:
        """When to look again: later the further back a message waits, and for a message parked on a
        helper call only at its deadline (the helper's task wakes it sooner when the call is done)."""
        position = self.position(session_id, message_id) or 0
        cap = self.settings.session_lock_seconds
        if position == 0:
            record = self.messages.get(message_id)
            if record is not None and record.stage == "awaiting_helper" and record.call:
                return min(max(float(record.call["deadline"]) - time.time() + 0.1, 0.5), cap)
            if record is not None and record.stage == "converting":
                return min(max(self._convert_deadline(record) - time.time() + 0.1, 0.5), cap)
        return min(self.settings.session_retry_seconds * (1 + position), cap)

    # -- one message -------------------------------------------------------
    def _process_head(self, lease: Lease, message_id: str) -> str | None:
        """Move the head one step; the next head to work on, or None when the inbox is empty or the head
        is parked waiting for a helper or a conversion (the session waits too; their tasks resume it).

        The attempt is counted before anything of the record is parsed, and whatever fails in the step
        (loading, history, routing, generation, recording, queueing the delivery) counts as that attempt:
        the ``max_attempts``-th failure fails the message from its raw fields, so no record can loop."""
        bind_message(message_id, lease.session_id)  # log lines name the message being answered (telemetry/logs.py)
        raw = self.messages.get_raw(message_id)
        if not raw:  # expired (older than STATUS_TTL_SECONDS)
            log.warning("dropping unknown message %s from session %s", message_id, lease.session_id)
            return self.sessions.pop(lease, message_id)
        if raw.get("status") in TERMINAL:  # finished by an older version that popped separately, or replayed
            return self.sessions.pop(lease, message_id, self._hand_over_raw(message_id, raw))
        if _parked(raw, self._convert_deadline):
            return None
        attempts, history = self.sessions.begin(lease, message_id, self.settings.max_attempts)
        if attempts > self.settings.max_attempts:
            reason = f"gave up after {attempts - 1} attempts that crashed, timed out or lost their lease"
            return self._fail(lease, message_id, raw, reason)
        try:
            # An attempt after one that crashed, timed out or lost its lease is generated alone, so that a poison
            # message crashes only itself, never the conversations batched beside it (model_process.py).
            with generating_alone(attempts > 1), generating_for(lease.session_id):
                return self._step(lease, MessageRecord.from_hash(raw), history)
        except LeaseLost:
            raise
        except Exception as exc:
            log.exception("message %s failed (attempt %d)", message_id, attempts)
            if attempts >= self.settings.max_attempts:
                return self._fail(lease, message_id, raw,
                                  f"gave up after {attempts} attempts; the last: {type(exc).__name__}: {exc}")
            raise

    def _step(self, lease: Lease, record: MessageRecord, history: list[Turn]) -> str | None:
        """One attempt at the head: answer it (or park it on a helper call) and record the outcome."""
        message_id = record.message_id
        envelope = Envelope.from_dict(record.envelope)
        if record.stage == "awaiting_helper" and record.call:  # the helper never answered in time
            self.messages.complete_call(message_id, record.call["call_id"],
                                        {"output": None, "error": "timed out", "outcome": "failed", "duration_ms": 0})
            record = self.messages.get(message_id) or record
        if record.stage == "converting":  # the conversion never finished: say so instead of waiting forever
            reply = self._reply(envelope, CONVERT_TIMEOUT_TEXT)
            turns: tuple[Turn, ...] = (Turn("user", envelope.text, message_id),
                                       Turn("assistant", reply.text, message_id))
        elif record.stage == "helper_done" and record.call:
            reply, turns = self._compose(envelope, history, record.call, record.call_result or {}, lease)
        else:
            decision = self.helpers.decide(envelope) if self.helpers else Decision()
            if decision.call is not None:
                answered = self.helpers.admit(envelope, decision.call) if self.helpers else None
                if answered is None:
                    self._park(lease, envelope, decision.call)
                    return None
                reply, turns = self._compose(envelope, history, _call_json(decision.call, "", 0.0), answered, lease)
            elif decision.text is not None:
                reply = self._reply(envelope, decision.text)
                turns = (Turn("user", envelope.text, message_id), Turn("assistant", reply.text, message_id))
            else:
                reply = self._answer(envelope, history, lease=lease)
                turns = (Turn("user", envelope.text, message_id), Turn("assistant", reply.text, message_id))
        return self.sessions.finish(
            lease, message_id, status="answered", field="reply", value=json.dumps(_public_reply(reply)), turns=turns,
            delivery=self._delivery(reply),
        )

    def _convert_deadline(self, record: MessageRecord) -> float:
        """When a message still converting media is given up on: MEDIA_CONVERT_TIMEOUT per attachment plus slack."""
        count = max(1, len(record.envelope.get("attachments") or ()))
        slack = self.settings.media_fetch_timeout * (self.settings.media_fetch_retries + 1) + 30
        return record.created_at + self.settings.media_convert_timeout * count + slack

    def _park(self, lease: Lease, envelope: Envelope, call: ToolCall) -> None:
        """Record the call on the message (fenced), then send it to the helper's own queue."""
        timeout = min(call.capability.timeout or self.settings.helper_timeout, self.settings.helper_max_timeout)
        payload = _call_json(call, f"{envelope.message_id}-{uuid.uuid4().hex[:8]}",
                             call_deadline(self.settings, timeout, time.time()))
        payload["channel"] = envelope.channel
        self.sessions.set_fields(lease, envelope.message_id, {
            "stage": "awaiting_helper", "call_id": payload["call_id"], "call": json.dumps(payload),
        })
        self.call_helper(envelope.message_id, envelope.session_id, payload)

    def _compose(
        self, envelope: Envelope, history: list[Turn], call: dict[str, Any], result: dict[str, Any],
        lease: Lease | None = None,
    ) -> tuple[Reply, tuple[Turn, ...]]:
        """The reply to a message whose helper call finished (or failed), and the turns to remember."""
        mid = envelope.message_id
        record = {"helper": call["helper"], "capability": call["capability"], "via": call.get("via"),
                  "input": call.get("arguments"), "output": result.get("output"), "error": result.get("error"),
                  "duration_ms": result.get("duration_ms", 0)}
        tool_turn = Turn("tool", json.dumps(record, ensure_ascii=False), mid)
        output, outcome = result.get("output") or {}, call_outcome(result)
        qualified, direct = f"{call['helper']}.{call['capability']}", call.get("reply") == "direct"
        if outcome == "ok" and direct:
            reply = self._reply(envelope, str(output.get("text", "")))
        elif outcome == "ok":
            reply = self._answer(envelope, history, extra=result_note(qualified, output), lease=lease)
        elif outcome == "refused" and not direct:  # the model tells the person, given the helper's own message
            reply = self._answer(envelope, history, extra=refusal_note(qualified, str(result.get("error"))),
                                 lease=lease)
        else:
            reply = self._reply(envelope, failure_text(call["helper"], result))
        return reply, (Turn("user", envelope.text, mid), tool_turn, Turn("assistant", reply.text, mid))

    def _reply(self, envelope: Envelope, text: str) -> Reply:
        return Reply(message_id=envelope.message_id, session_id=envelope.session_id, text=text,
                     channel=envelope.channel, reply=envelope.reply)

    def _answer(self, envelope: Envelope, history: list[Turn], extra: str = "", lease: Lease | None = None) -> Reply:
        llm = self.llm()
        prompt = build_messages(
            system_prompt=self.settings.system_prompt,
            history=history,
            text=envelope.text,
            note=extra,
            count_tokens=llm.count_tokens,
            budget=prompt_budget(llm.context_length, self.settings.llm_max_tokens),
        )
        stream = self.partials.open(lease, envelope) if self.partials and lease else None
        started = time.perf_counter()
        completion = chat_with_progress(llm, prompt.messages, max_tokens=self.settings.llm_max_tokens,
                                        on_progress=_guarded(stream, lease))
        generation_ms = (time.perf_counter() - started) * 1000
        return Reply(
            message_id=envelope.message_id,
            session_id=envelope.session_id,
            text=completion.text.strip(),
            channel=envelope.channel,
            reply=envelope.reply,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            context_message_ids=tuple(prompt.history_ids),
            generation_ms=round(generation_ms, 3),
        )

    def _fail(self, lease: Lease, message_id: str, raw: dict[str, str], reason: str) -> str | None:
        """Finish a message as failed from its raw fields: dead-letter it with the operator's reason, tell the
        person politely when a reply route can be made out, move the session on. Nothing here parses strictly,
        so a message that cannot be loaded, rendered or delivered still ends."""
        self.dead_letters.add("poison", message_id, reason)
        return self.sessions.finish(lease, message_id, status="failed", field="error", value=reason,
                                    delivery=self._failure_delivery(message_id, raw, reason))

    def _failure_delivery(self, message_id: str, raw: dict[str, str], reason: str) -> QueuedTask | None:
        """The polite notice's delivery, or None when there is no route to the person or it cannot be queued."""
        try:
            return self._delivery(_raw_failure_reply(message_id, raw, reason))
        except Exception:
            log.exception("no failure notice for %s: its delivery could not be queued", message_id)
            return None

    def _hand_over_raw(self, message_id: str, raw: dict[str, str]) -> QueuedTask | None:
        try:
            return self._hand_over(MessageRecord.from_hash(raw))
        except Exception:  # a finished record whose delivery cannot be rebuilt must not block the session
            log.exception("finished message %s left without re-queueing its delivery", message_id)
            return None

    def redeliver(self, record: MessageRecord) -> None:
        """Queue the delivery of a finished message again (the sweeper, for an outbox head that lost its task):
        a plain LPUSH of the task message is all kombu's publish does."""
        task = self._hand_over(record)
        if task is not None:
            self.messages.redis.lpush(task.queue, task.payload)

    def _hand_over(self, record: MessageRecord) -> QueuedTask | None:
        """The delivery of a finished message still in the inbox, queued again (delivery is idempotent)."""
        envelope = Envelope.from_dict(record.envelope)
        if record.status == "answered" and record.reply is not None:
            return self._delivery(
                Reply(
                    message_id=record.message_id,
                    session_id=record.session_id,
                    text=record.reply["text"],
                    channel=envelope.channel,
                    reply=envelope.reply,
                    created_at=record.reply.get("created_at", utcnow_iso()),
                )
            )
        return self._delivery(_failure_reply(envelope, record.error or "failed"))

    def _delivery(self, reply: Reply) -> QueuedTask | None:
        if not reply.reply.callback_url:
            return None
        return self.deliver({**reply.to_dict(), "first_attempt_at": time.time()})


def _public_reply(reply: Reply) -> dict[str, Any]:
    return {
        "text": reply.text,
        "created_at": reply.created_at,
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "context_message_ids": list(reply.context_message_ids),
        "generation_ms": reply.generation_ms,
    }


CONVERT_TIMEOUT_TEXT = ("Sorry, I could not read the file you sent in time. Please try again with a smaller file, "
                        "or paste the part you need as text.")
FAILURE_TEXT = "Sorry, I could not answer that message. Please try again or rephrase it."


def _failure_reply(envelope: Envelope, reason: str) -> Reply:
    """The notice for a failed message; its ``error`` is the safe public phrase (it reaches the channel)."""
    return Reply(
        message_id=envelope.message_id,
        session_id=envelope.session_id,
        text=FAILURE_TEXT,
        channel=envelope.channel,
        reply=envelope.reply if envelope.reply else ReplyRoute(None),
        status="failed",
        error=public_error(reason),
    )


def _raw_failure_reply(message_id: str, raw: dict[str, str], reason: str) -> Reply:
    """The notice built from the record as stored: the validated envelope when it loads, else whatever reply
    route its JSON names (the delivery step validates again and dead-letters what cannot be sent)."""
    try:
        return _failure_reply(Envelope.from_dict(json.loads(raw.get("envelope") or "{}")), reason)
    except Exception:
        log.warning("envelope of %s does not load; building its failure notice from the raw record", message_id)
    envelope = json.loads(raw.get("envelope") or "{}")
    route = envelope.get("reply") if isinstance(envelope, dict) else None
    route = route if isinstance(route, dict) else {}
    url, context = route.get("callback_url"), route.get("context")
    return Reply(message_id=message_id, session_id=str(raw.get("session_id", "")), text=FAILURE_TEXT,
                 channel=str(envelope.get("channel", "") if isinstance(envelope, dict) else ""),
                 reply=ReplyRoute(url if isinstance(url, str) and url else None,
                                  context if isinstance(context, dict) else {}),
                 status="failed", error=public_error(reason))


def _parked(raw: dict[str, str], convert_deadline: Callable[[MessageRecord], float]) -> bool:
    """A head waiting on a helper call or a conversion that still has time (its task resumes the session).
    A record that does not parse is not parked: the attempt that follows fails it."""
    try:
        record = MessageRecord.from_hash(raw)
        if record.stage == "awaiting_helper" and record.call:
            return time.time() < float(record.call["deadline"])
        return record.stage == "converting" and time.time() < convert_deadline(record)
    except Exception:
        return False


def _call_json(call: ToolCall, call_id: str, deadline: float) -> dict[str, Any]:
    return {"call_id": call_id, "helper": call.capability.helper, "capability": call.capability.name,
            "arguments": call.arguments, "reply": call.capability.reply, "via": call.via, "deadline": deadline}
