"""Time limits for tasks on Celery's threads pool, which ignores ``task_soft_time_limit`` and ``task_time_limit``.

The prefork pool enforces them with a signal (soft: ``SoftTimeLimitExceeded`` raised in the task) and by
killing the child (hard). A thread can be neither signalled nor killed, so a watchdog thread does what can be
done: at the soft limit it raises ``SoftTimeLimitExceeded`` in the task's thread
(``PyThreadState_SetAsyncExc``), the exception the tasks already handle under prefork; at the hard limit it
raises ``TimeLimitExceeded`` there, logs an error and counts it. An exception raised this way lands at the
thread's next bytecode, so a thread blocked in one system call gets it when that call returns: every
blocking call of the io tasks has its own bound (a fetch's deadline shuts its socket, a callback or helper
call has a total timeout, a conversion runs in a child process with a wall clock), so that is soon.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from dataclasses import dataclass

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from telemetry import metrics

__all__ = ["ThreadTimeLimits"]

log = logging.getLogger(__name__)


@dataclass
class _Running:
    name: str
    thread: int
    started: float
    soft: float
    hard: float
    stage: int = 0  # 0: running, 1: soft limit raised, 2: hard limit raised


class ThreadTimeLimits:
    def __init__(self, *, interval: float = 0.5) -> None:
        self.interval = interval
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def started(self, task_id: str, name: str, soft: float, hard: float) -> None:
        """Called in the task's own thread as it starts (``task_prerun``)."""
        with self._lock:
            self._running[task_id] = _Running(name, threading.get_ident(), time.monotonic(), soft, hard)

    def finished(self, task_id: str) -> None:
        with self._lock:
            self._running.pop(task_id, None)

    def start(self) -> None:
        threading.Thread(target=self._watch, name="thread-time-limits", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def check(self, now: float | None = None) -> int:
        """Raise the limits that have passed; how many were raised."""
        now = time.monotonic() if now is None else now
        due: list[tuple[str, _Running, type[BaseException]]] = []
        with self._lock:
            for task_id, task in self._running.items():
                age = now - task.started
                if task.stage < 2 and task.hard and age >= task.hard:
                    task.stage = 2
                    due.append((task_id, task, TimeLimitExceeded))
                elif task.stage < 1 and task.soft and age >= task.soft:
                    task.stage = 1
                    due.append((task_id, task, SoftTimeLimitExceeded))
        for task_id, task, exc in due:
            if exc is TimeLimitExceeded:
                log.error("task %s[%s] is past its hard time limit (%.0f s) on the threads pool: raising "
                          "TimeLimitExceeded in its thread", task.name, task_id, task.hard)
            else:
                log.warning("task %s[%s] passed its soft time limit (%.0f s): raising SoftTimeLimitExceeded",
                            task.name, task_id, task.soft)
            metrics.inc("switchboard_thread_time_limits_total", limit="hard" if exc is TimeLimitExceeded else "soft")
            _raise_in(task.thread, exc)
        return len(due)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                log.exception("thread time limit check failed")


def _raise_in(thread_id: int, exc: type[BaseException]) -> None:
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))
    if done > 1:  # never expected: undo rather than hit several threads
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
