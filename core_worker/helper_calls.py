"""Calling a helper: a signed POST, retried, guarded by the circuit breaker, then back to the core.

Runs as the ``helper.call`` task on the helper's own queue (``helper.<name>``),
consumed by io workers, so a slow or dead helper only ever holds up its own
calls.  The core never waits for it: it parks the message and this task,
once it has a result or an error, records it on the message and sends
``core.handle_message`` again (chain back, no ``.get()``).

What an answer means (a result, the helper's refusal of this input, or the
helper failing) is decided in helper_answers.py; only failures are retried
and counted against the circuit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core_worker.delivery import backoff_delay
from core_worker.helper_answers import Verdict, judge
from core_worker.outbound_post import post
from outbound_http.host_policy import BlockedURL, HostPolicy, OutboundError
from redis_stores.helper_registry import HelperRegistry
from redis_stores.messages import MessageStore
from tasks.settings import Settings
from tasks.signing import sign_headers
from telemetry import metrics

__all__ = ["HelperCaller", "call_deadline"]

log = logging.getLogger(__name__)

TRIAL_MARGIN_SECONDS = 5.0  # a half-open trial is held this long past its call's timeout


def call_deadline(settings: Settings, timeout: float, now: float) -> float:
    """When the core stops waiting for a call: every attempt timing out, plus the backoff between them."""
    retries = settings.helper_retries
    backoff = sum(min(settings.helper_backoff_base * 2**i, timeout) for i in range(retries))
    return now + timeout * (retries + 1) + backoff + 5.0


@dataclass
class HelperCaller:
    settings: Settings
    messages: MessageStore
    registry: HelperRegistry
    policy: HostPolicy
    resume: Callable[[str, str], None]  # sends core.handle_message(message_id, session_id)

    def attempt(self, message_id: str, session_id: str, call: dict[str, Any], retries: int) -> float | None:
        """Make the call once; a delay when it should be retried, else None (result recorded, core resumed)."""
        record = self.messages.get(message_id)
        if record is None or record.stage != "awaiting_helper" or (record.call or {}).get("call_id") != call["call_id"]:
            return None  # a stale or repeated task: the message moved on
        name, capability_name = call["helper"], call["capability"]
        helper = self.registry.get(name)
        if helper is None or (capability := helper.capability(capability_name)) is None:
            unknown = Verdict("failed", error=f"the {name} helper is not registered")
            self._finish_now(message_id, session_id, call, unknown)
            return None
        timeout = min(capability.timeout or self.settings.helper_timeout, self.settings.helper_max_timeout)
        # The one place a call is let through the circuit (and, half-open, where the single trial is claimed).
        if not self.registry.allow_call(name, call["call_id"], trial_seconds=timeout + TRIAL_MARGIN_SECONDS):
            self._finish_now(message_id, session_id, call, Verdict("failed", error="circuit open"))
            return None

        body = json.dumps({
            "input": call["arguments"],
            "context": {"call_id": call["call_id"], "message_id": message_id, "session_id": session_id,
                        "channel": call.get("channel", "")},
        })
        headers = sign_headers(helper.secret, call["call_id"], body)
        started = time.perf_counter()
        try:
            result = post(self.policy, f"{helper.url.rstrip('/')}/invoke/{capability_name}", body.encode(), headers,
                          timeout=timeout, max_response_bytes=self.settings.max_reply_bytes)
        except BlockedURL as exc:
            verdict = Verdict("failed", error=f"helper URL refused: {exc}")
        except OutboundError as exc:
            verdict = Verdict("failed", error=f"unreachable: {exc}", retryable=True)
        else:
            verdict = judge(result.status, result.body, capability.output_schema, first_try=retries == 0)
        elapsed = time.perf_counter() - started
        metrics.observe("switchboard_helper_call_seconds", elapsed, helper=name,
                        outcome="error" if verdict.outcome == "failed" else verdict.outcome)
        if verdict.outcome != "failed":  # a result, or the helper's own refusal of this input: it works
            self.registry.record_success(name, refused=verdict.outcome == "refused")
            if verdict.outcome == "refused":
                log.info("call %s to %s.%s refused its input: %s", call["call_id"], name, capability_name,
                         verdict.error)
            self._finish_now(message_id, session_id, call, verdict, round(elapsed * 1000, 1))
            return None
        error = verdict.error or "failed"
        may_retry = verdict.retryable and retries < self.settings.helper_retries
        circuit = self.registry.record_failure(name, error) if verdict.counts or not may_retry else "closed"
        log.warning("call %s to %s.%s failed (%s): %s", call["call_id"], name, capability_name, circuit, error)
        if may_retry and circuit != "open":
            return backoff_delay(retries, self.settings.helper_backoff_base, timeout) + 0.05
        self._finish_now(message_id, session_id, call, Verdict("failed", error=f"the {name} helper failed: {error}"))
        return None

    def _finish_now(
        self, message_id: str, session_id: str, call: dict[str, Any], verdict: Verdict, duration_ms: float = 0.0,
    ) -> None:
        result = {"output": verdict.output, "error": verdict.error, "outcome": verdict.outcome,
                  "duration_ms": duration_ms}
        if self.messages.complete_call(message_id, call["call_id"], result):
            self.resume(message_id, session_id)
