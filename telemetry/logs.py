"""Structured logs that follow one message through every process.

Each line is one JSON object (``LOG_FORMAT=json``, the default) or a
readable line (``LOG_FORMAT=text``) with the same fields:
``ts``, ``level``, ``logger``, ``role`` (edge, core, io, mail, cli), ``pid``,
``message`` and, when the line is about a message, ``message_id`` and
``session_id``.

The ids live in context variables: the edge binds them when a message is
accepted (``bind_message``), the workers when a task starts — every task's
first argument is the message id (or a reply carrying it), so no extra task
header is needed and tasks sent by older code still get their ids.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = [
    "ContextFilter",
    "JsonFormatter",
    "bind_message",
    "bound_message",
    "configure_logging",
    "current_ids",
    "current_role",
    "ids_from_task_args",
    "set_role",
    "unbind_message",
]

_message_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("message_id", default=None)
_session_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
_role = {"name": ""}  # set by the process's entry module (configure_logging, set_role)

# Attributes every LogRecord has; anything else passed as ``extra=`` becomes a JSON field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def set_role(role: str) -> None:
    """Name this process in every line (edge, core, io, mail, cli)."""
    _role["name"] = role


def current_role() -> str:
    return _role["name"]


def bind_message(message_id: str | None, session_id: str | None = None) -> None:
    """Tag the log lines of the current thread/context with a message (until ``unbind_message``)."""
    _message_id.set(message_id)
    _session_id.set(session_id)


def unbind_message() -> None:
    _message_id.set(None)
    _session_id.set(None)


@contextmanager
def bound_message(message_id: str | None, session_id: str | None = None) -> Iterator[None]:
    tokens = (_message_id.set(message_id), _session_id.set(session_id))
    try:
        yield
    finally:
        _message_id.reset(tokens[0])
        _session_id.reset(tokens[1])


def current_ids() -> tuple[str | None, str | None]:
    return _message_id.get(), _session_id.get()


def ids_from_task_args(args: Any) -> tuple[str | None, str | None]:
    """The (message_id, session_id) of a task's arguments: ``(message_id, session_id, ...)`` or
    ``(reply_payload,)`` as every Switchboard task takes them; (None, None) for anything else."""
    if not isinstance(args, list | tuple) or not args:
        return None, None
    first = args[0]
    if isinstance(first, Mapping):
        mid, sid = first.get("message_id"), first.get("session_id")
        return (str(mid) if mid else None), (str(sid) if sid else None)
    if isinstance(first, str):
        second = args[1] if len(args) > 1 and isinstance(args[1], str) else None
        return first, second
    return None, None


class ContextFilter(logging.Filter):
    """Copies the bound ids and the role onto every record (explicit ``extra=`` ids win).

    ``role`` names the process when nothing set it yet (gunicorn's master, configured by dictConfig)."""

    def __init__(self, role: str = "") -> None:
        super().__init__()
        if role and not _role["name"]:
            _role["name"] = role

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "message_id", None) is None:
            record.message_id = _message_id.get()
        if getattr(record, "session_id", None) is None:
            record.session_id = _session_id.get()
        record.role = _role["name"] or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; never raises on odd values (they are ``str()``-ed)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "role": getattr(record, "role", "-"),
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in ("message_id", "session_id"):
            value = getattr(record, name, None)
            if value:
                entry[name] = value
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in entry and name != "role" and value is not None:
                entry[name] = _without_payload(value) if name == "data" else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def _without_payload(data: Any) -> Any:
    """Celery's task lines carry the task's arguments and result (message texts): keep only what identifies."""
    if isinstance(data, Mapping):
        return {k: data[k] for k in ("id", "name", "runtime", "eta") if k in data}
    return None


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        mid = getattr(record, "message_id", None)
        return f"{line} [message_id={mid}]" if mid else line


def configure_logging(role: str, fmt: str = "json", level: int | str = logging.INFO) -> None:
    """Send every logger's lines to stderr in ``fmt`` (json | text), replacing earlier handlers."""
    set_role(role)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "text":
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(role)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    handler._switchboard = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    # Replace only our own earlier handler: others (pytest's capture, an embedding app's) stay.
    root.handlers = [h for h in root.handlers if not getattr(h, "_switchboard", False)] + [handler]
    root.setLevel(level)
    for name in ("gunicorn.error", "celery", "celery.task", "celery.redirected"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
