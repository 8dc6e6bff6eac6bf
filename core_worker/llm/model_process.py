"""The model in a process of its own, beside the core worker's task threads.

The LLM worker runs ``LLM_PARALLEL`` task threads (Celery's threads pool) against one model, so that their
conversations can be batched.  The model itself lives in a child process: a crash inside llama.cpp (or a
poison message that kills whatever runs it) then kills only that child, not the worker and its other
tasks.  Every call in flight gets :class:`ModelProcessDied`, its task retries (the attempt counted: after
``MAX_ATTEMPTS`` the message is dead-lettered), and the next call starts a new child.

- :class:`ModelProcess` is the worker's side: an ``LLMBackend`` whose calls go over a pipe.
- ``serve`` is the child's: it loads the backend and runs calls on threads, as many at once as the backend
  can take (``parallel_safe``; llama_cpp batches them), relaying each reply's text as it grows.

A message that crashed an earlier attempt is generated *alone* (:func:`generating_alone`): the child lets
it start only when nothing else runs, and starts nothing else until it ends.  So a poison message crashes
only itself, and cannot use up the attempts of the conversations batched beside it.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from .base import (
    BackendConfig,
    ChatMessage,
    Completion,
    GenerationError,
    ModelLoadError,
    Progress,
    conversation_owner,
    generating_for,
)

__all__ = ["ModelProcess", "ModelProcessDied", "generating_alone", "runs_alone", "serve"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.1  # seconds between two relays of a reply's text (the first token goes at once)
POLL = 0.5  # seconds a waiting call goes without calling its progress (which checks its lease)

_alone: contextvars.ContextVar[bool] = contextvars.ContextVar("generating_alone", default=False)


class ModelProcessDied(GenerationError):
    """The model's process ended while the call was in flight (a crash, a kill)."""


class Cancelled(GenerationError):
    """The caller cancelled the call (its progress callback raised)."""


@contextlib.contextmanager
def generating_alone(alone: bool = True) -> Iterator[None]:
    """Calls made inside run with nothing else beside them in the model's process."""
    token = _alone.set(alone)
    try:
        yield
    finally:
        _alone.reset(token)


def runs_alone() -> bool:
    """Whether calls made here now would run alone (inside ``generating_alone``)."""
    return _alone.get()


class ModelProcess:
    """The worker's handle on the model's process: an ``LLMBackend`` that is safe from many threads."""

    streams = True
    parallel_safe = True

    def __init__(self, config: BackendConfig, *, load_timeout: float) -> None:
        self.config, self.load_timeout = config, load_timeout
        self._ids = itertools.count(1)
        self._calls: dict[int, queue.Queue[tuple[Any, ...]]] = {}
        self._lock = threading.Lock()  # the pipe's sending end, the call table
        self._start_lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: Any = None
        self._closed = False
        self.starts = 0
        self.info: dict[str, Any] = {}
        # Before multiprocessing's own exit handler, which would join a child still waiting on this pipe.
        atexit.register(self.close)
        self._start()
        self.name: str = self.info["name"]
        self.context_length: int = self.info["context_length"]
        self.constrains_json: bool = self.info["constrains_json"]

    # -- the child's lifetime ------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive() and self._conn is not None

    def _start(self) -> None:
        """Start the child and wait for its model (``MODEL_LOAD_TIMEOUT``); ModelLoadError if it cannot."""
        with self._start_lock:
            if self.alive():
                return
            if self._closed:
                raise GenerationError("backend is closed")
            ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or locks of ours copied
            parent, child = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=serve, args=(child, asdict(self.config)), name="switchboard-model", daemon=True)
            proc.start()
            child.close()
            if not parent.poll(self.load_timeout):
                proc.kill()
                proc.join(5)
                raise ModelLoadError(f"the model did not load within MODEL_LOAD_TIMEOUT ({self.load_timeout:g} s)")
            try:
                kind, payload = parent.recv()
            except (EOFError, OSError):
                proc.join(5)
                raise ModelLoadError(f"the model's process died while loading (exit code {proc.exitcode})") from None
            if kind != "ready":
                proc.join(5)
                raise ModelLoadError(str(payload))
            self.info, self._conn, self._proc = payload, parent, proc
            self.starts += 1
            threading.Thread(target=self._read, args=(parent, proc), name="model-process-reader", daemon=True).start()
            log.info("model process %d ready: %s, %s conversation(s) at once", proc.pid, payload["name"],
                     payload["parallel"])

    def _read(self, conn: Connection, proc: Any) -> None:
        """Hand each message from the child to its call; when the child ends, fail every call in flight."""
        while True:
            try:
                call_id, *item = conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                waiting = self._calls.get(call_id)
            if waiting is not None:
                waiting.put(tuple(item))
        with self._lock:  # closed here, by the one thread that reads it, between two sends (close() shuts it down)
            conn.close()
            if self._conn is conn:
                self._conn = None
        proc.join(5)
        with self._lock:
            calls = list(self._calls.values())
        if not self._closed:
            log.error("the model process %s ended (exit code %s); %d call(s) in flight fail and retry",
                      proc.pid, proc.exitcode, len(calls))
        for waiting in calls:
            waiting.put(("died", proc.exitcode))

    def _call(self, kind: str, payload: dict[str, Any], on_progress: Progress | None = None) -> Any:
        if not self.alive():
            self._start()
        call_id = next(self._ids)
        answers: queue.Queue[tuple[Any, ...]] = queue.Queue()
        with self._lock:
            conn = self._conn
            if conn is None:
                raise ModelProcessDied("the model process is not running")
            self._calls[call_id] = answers
        text, ended = "", False
        try:
            with self._lock:
                conn.send((kind, call_id, payload))
            while True:
                try:
                    item = answers.get(timeout=POLL)
                except queue.Empty:
                    if on_progress is not None:
                        on_progress(_constant(text))  # nothing new: it checks its lease, and may raise
                    continue
                if item[0] == "progress":
                    text = item[1]
                    if on_progress is not None:
                        on_progress(_constant(text))
                    continue
                ended = True
                if item[0] == "done":
                    return item[1]
                if item[0] == "died":
                    raise ModelProcessDied(f"the model process died while answering (exit code {item[1]})")
                error = ModelLoadError if item[1] == "ModelLoadError" else GenerationError
                raise error(item[2])
        except BaseException:
            if not ended:  # the lease was lost, a time limit passed: the child stops generating for nobody
                self._send_quietly(("cancel", call_id, {}))
            raise
        finally:
            with self._lock:
                self._calls.pop(call_id, None)

    def _send_quietly(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            conn = self._conn
            if conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(message)

    # -- LLMBackend ------------------------------------------------------------
    def chat(self, messages: Sequence[ChatMessage], *, max_tokens: int | None = None, stop: Sequence[str] = (),
             json_schema: dict[str, Any] | None = None, on_progress: Progress | None = None) -> Completion:
        payload = {"messages": [(m.role, m.content) for m in messages], "max_tokens": max_tokens,
                   "stop": list(stop), "json_schema": json_schema, "alone": runs_alone(), "owner": conversation_owner(),
                   "stream": on_progress is not None}
        completion: Completion = self._call("chat", payload, on_progress)
        return completion

    def count_tokens(self, text: str) -> int:
        return int(self._call("count", {"text": text})) if text else 0

    def render_prompt(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt as the model receives it (``LLM_LOG_PROMPTS``); the messages as JSON where the backend
        renders elsewhere (an OpenAI-compatible server)."""
        return str(self._call("render", {"messages": [(m.role, m.content) for m in messages]}))

    def close(self) -> None:
        self._closed = True
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            _hang_up(conn)  # the child ends when its pipe closes
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()


# --------------------------------------------------------------------------- the child's side
class _Gate:
    """Calls share the model; an ``alone`` call waits until nothing runs and holds off the rest until it ends."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._alone_waiting = 0
        self._alone_running = False

    @contextlib.contextmanager
    def enter(self, alone: bool) -> Iterator[None]:
        with self._cond:
            if alone:
                self._alone_waiting += 1
                while self._shared or self._alone_running:
                    self._cond.wait()
                self._alone_waiting -= 1
                self._alone_running = True
            else:
                while self._alone_running or self._alone_waiting:
                    self._cond.wait()
                self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                if alone:
                    self._alone_running = False
                else:
                    self._shared -= 1
                self._cond.notify_all()


def serve(conn: Connection, config: dict[str, Any]) -> None:
    """The model process: load the backend, then answer calls until the worker closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a warm shutdown of the worker lets the calls in flight end;
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the child ends when its pipe closes (the worker is gone)
    from . import load_backend

    backend_config = BackendConfig(**config)
    try:
        backend = load_backend(backend_config)
    except Exception as exc:  # ModelLoadError and a custom factory's own failures
        conn.send(("load_error", str(exc)))
        return
    parallel = max(1, backend_config.parallel) if getattr(backend, "parallel_safe", False) else 1
    send_lock = threading.Lock()
    exclusive = threading.Lock() if parallel == 1 else None  # a backend that is not safe from two threads
    gate = _Gate()
    cancelled: set[int] = set()

    def send(*message: Any) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            conn.send(message)

    def run(kind: str, call_id: int, payload: dict[str, Any]) -> None:
        try:
            with exclusive or contextlib.nullcontext(), gate.enter(bool(payload.get("alone"))):
                send(call_id, "done", answer(kind, call_id, payload))
        except BaseException as exc:  # every failure goes back to the caller, none kills this process
            send(call_id, "error", type(exc).__name__, str(exc) or type(exc).__name__)
        finally:
            cancelled.discard(call_id)

    def answer(kind: str, call_id: int, payload: dict[str, Any]) -> Any:
        messages = [ChatMessage(role, content) for role, content in payload.get("messages", ())]
        if kind == "count":
            return backend.count_tokens(payload["text"])
        if kind == "render":
            render = getattr(backend, "render_prompt", None)
            if callable(render):
                return render(messages)
            import json

            return json.dumps([{"role": m.role, "content": m.content} for m in messages], ensure_ascii=False)
        if call_id in cancelled:
            raise Cancelled("cancelled before it started")
        progress = _relay(lambda text: send(call_id, "progress", text), lambda: call_id in cancelled)
        kwargs: dict[str, Any] = {"max_tokens": payload["max_tokens"], "stop": payload["stop"]}
        if payload["json_schema"] is not None:
            kwargs["json_schema"] = payload["json_schema"]
        if getattr(backend, "streams", False):
            kwargs["on_progress"] = progress  # also how a cancel reaches a generation under way
        with generating_for(str(payload.get("owner") or "")):
            return backend.chat(messages, **kwargs)

    conn.send(("ready", {"name": backend.name, "context_length": int(backend.context_length),
                         "constrains_json": bool(backend.constrains_json), "parallel": parallel,
                         "pid": os.getpid()}))
    pool = ThreadPoolExecutor(max_workers=parallel + 2, thread_name_prefix="model-call")
    while True:
        try:
            kind, call_id, payload = conn.recv()
        except (EOFError, OSError):
            break
        if kind == "cancel":
            cancelled.add(call_id)
        else:
            pool.submit(run, kind, call_id, payload)
    # The worker is gone: nobody waits for the calls still running. Exit without the native threads'
    # teardown (llama.cpp's can hang at exit).
    os._exit(0)


def _hang_up(conn: Connection) -> None:
    """Close the worker's end of the pipe so that the child sees it closed and the reader thread wakes.

    ``conn.close()`` from here did neither: the reader thread blocked in ``recv()`` keeps the socket open (the
    kernel holds it until that read returns), so the child never got EOF and close() killed it after 10 s; and
    a reader woken mid-message then read from a closed handle (TypeError), died, and left the calls in flight
    waiting forever.  Shutting the socket down ends both reads; the reader closes the connection itself."""
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        conn.close()


def _constant(text: str) -> Callable[[], str]:
    return lambda: text


def _relay(send: Callable[[str], None], is_cancelled: Callable[[], bool]) -> Progress:
    """A progress callback that relays the text so far at most every PROGRESS_INTERVAL (the first at once),
    and raises Cancelled once the caller has cancelled."""
    last = [float("-inf")]

    def progress(text_so_far: Callable[[], str]) -> None:
        if is_cancelled():
            raise Cancelled("cancelled by the caller")
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            send(text_so_far())

    return progress
