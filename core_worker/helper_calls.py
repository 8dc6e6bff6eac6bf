"""Calling a helper: a signed POST, retried, guarded by the circuit breaker, then back to the core.

Runs as the ``helper.call`` task on the helper's own queue (``helper.<name>``),
consumed by io workers, so a slow or dead helper only ever holds up its own
calls.  The core never waits for it: it parks the message and this task,
once it has a result or an error, records it on the message and sends
``core.handle_message`` again (chain back, no ``.get()``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema

from core_worker.delivery import backoff_delay
from tasks import metrics
from tasks.helpers import HelperRegistry
from tasks.messages import MessageStore
from tasks.outbound import BlockedURL, HostPolicy, OutboundError, post
from tasks.settings import Settings
from tasks.signing import sign_headers

__all__ = ["HelperCaller", "call_deadline"]

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 502, 503, 504})


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
            self._finish_now(message_id, session_id, call, error=f"the {name} helper is not registered")
            return None
        if not self.registry.allow_call(name):
            self._finish_now(message_id, session_id, call, error="circuit open")
            return None

        timeout = min(capability.timeout or self.settings.helper_timeout, self.settings.helper_max_timeout)
        body = json.dumps({
            "input": call["arguments"],
            "context": {"call_id": call["call_id"], "message_id": message_id, "session_id": session_id,
                        "channel": call.get("channel", "")},
        })
        headers = sign_headers(helper.secret, call["call_id"], body)
        started = time.perf_counter()
        retryable = False
        error: str | None
        try:
            result = post(self.policy, f"{helper.url.rstrip('/')}/invoke/{capability_name}", body.encode(), headers,
                          timeout=timeout, max_response_bytes=self.settings.max_reply_bytes)
        except BlockedURL as exc:
            error = f"helper URL refused: {exc}"
        except OutboundError as exc:
            error, retryable = f"unreachable: {exc}", True
        else:
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            if 200 <= result.status < 300:
                output, error = self._output(result.body, capability.output_schema)
                if error is None:
                    metrics.observe("switchboard_helper_call_seconds", elapsed_ms / 1000, helper=name, outcome="ok")
                    self.registry.record_success(name)
                    self._finish_now(message_id, session_id, call, output=output, duration_ms=elapsed_ms)
                    return None
            else:
                error = f"HTTP {result.status}: {result.body[:200].decode('utf-8', 'replace')}"
                retryable = result.status in RETRYABLE_STATUS or result.status >= 500
                # A helper that has just (re-)registered may not hold its new secret yet: one more try.
                retryable = retryable or (result.status == 401 and retries == 0)
        error = error or "failed"
        metrics.observe("switchboard_helper_call_seconds", time.perf_counter() - started, helper=name, outcome="error")
        circuit = self.registry.record_failure(name, error)
        log.warning("call %s to %s.%s failed (%s): %s", call["call_id"], name, capability_name, circuit, error)
        if retryable and circuit != "open" and retries < self.settings.helper_retries:
            return backoff_delay(retries, self.settings.helper_backoff_base, timeout) + 0.05
        self._finish_now(message_id, session_id, call, error=f"the {name} helper failed: {error}")
        return None

    @staticmethod
    def _output(raw: bytes, schema: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        try:
            output = json.loads(raw)["output"]
            jsonschema.validate(output, schema)
        except (ValueError, KeyError, TypeError) as exc:
            return {}, f"answered without a JSON 'output': {exc}"
        except jsonschema.ValidationError as exc:
            return {}, f"output does not match its schema: {exc.message}"
        return output, None

    def _finish_now(
        self, message_id: str, session_id: str, call: dict[str, Any], *,
        output: dict[str, Any] | None = None, error: str | None = None, duration_ms: float = 0.0,
    ) -> None:
        result = {"output": output, "error": error, "duration_ms": duration_ms}
        if self.messages.complete_call(message_id, call["call_id"], result):
            self.resume(message_id, session_id)
        return None
