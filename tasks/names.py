"""Task and queue names: the only thing the edge knows about the workers.

The edge sends tasks by name (``send_task``) and never imports
``core_worker``; routing is by pattern so a new task lands on the right
queue without touching the edge.
"""

from __future__ import annotations

__all__ = [
    "CALL_HELPER",
    "CONVERT_ATTACHMENTS",
    "DELIVER_PARTIAL",
    "DELIVER_REPLY",
    "HANDLE_MESSAGE",
    "HELPER_QUEUE_PREFIX",
    "QUEUE_CONVERT",
    "QUEUE_CORE",
    "QUEUE_DELIVER",
    "QUEUE_HELPERS",
    "TASK_ROUTES",
    "helper_queue",
]

HANDLE_MESSAGE = "core.handle_message"
DELIVER_REPLY = "deliver.deliver_reply"
DELIVER_PARTIAL = "deliver.deliver_partial"  # best effort: short expiry, never retried
CONVERT_ATTACHMENTS = "convert.attachments"  # media to text, on channel-side workers
CALL_HELPER = "helper.call"  # sent with queue=helper_queue(name): one queue per helper

QUEUE_CORE = "core"
QUEUE_DELIVER = "deliver"
QUEUE_CONVERT = "convert"
# Nothing is sent to it: a worker consuming it is the one that calls helpers (it consumes every helper's queue).
QUEUE_HELPERS = "helpers"
HELPER_QUEUE_PREFIX = "helper."


def helper_queue(helper_name: str) -> str:
    """One queue per helper, so a slow helper never blocks another."""
    return f"{HELPER_QUEUE_PREFIX}{helper_name}"


TASK_ROUTES: dict[str, dict[str, str]] = {
    "core.*": {"queue": QUEUE_CORE},
    "deliver.*": {"queue": QUEUE_DELIVER},
    "convert.*": {"queue": QUEUE_CONVERT},
}
