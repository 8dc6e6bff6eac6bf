"""After a lost broker connection, put the tasks the worker held back in their queue at once.

kombu's Redis transport records every task a worker receives in its ``unacked`` hash.  When the
connection drops, Celery closes it and kombu tries to push the held tasks (prefetched, waiting for a
countdown, or running and then cancelled by ``worker_cancel_long_running_tasks_on_connection_loss``)
back to their queues, through ``restore_unacked_once()``.  That is the moment Redis is unreachable, so
it fails; kombu marks them restored anyway, and the transport is then detached from its connection
(``transport.client = None``), so every later attempt on that channel, the garbage-collection retry and
the acks and rejects of tasks still running included, fails with ``AttributeError: 'NoneType' object
has no attribute 'hostname'`` in ``_connparams``.  Celery meanwhile drops its copies of the held tasks
(``Consumer.on_close``).  The tasks then exist only in the ``unacked`` hash, which kombu restores after
``VISIBILITY_TIMEOUT`` (an hour by default): until then the sweeper backstop (``SWEEP_INTERVAL +
SWEEP_AGE``) was their only way back (docs/reliability.md, "A Redis restart").

This consumer step runs each time the consumer has (re)connected: it takes the delivery tags still held
by the previous connection's task channel and restores each one through the new connection, with
kombu's own ``restore_by_tag`` (one WATCH/MULTI transaction per task: it moves the task from the
``unacked`` hash to the front of its queue, or does nothing if it was acknowledged or restored
meanwhile).  Tags it could not restore (Redis gone again) are kept for the next reconnect.  A task that
was still running in a thread when the connection dropped can so run twice; every task is idempotent
(the session lease and its fence, the delivery claim), which is what makes that safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import bootsteps
from celery.worker.consumer.tasks import Tasks

__all__ = ["RestoreHeldTasks", "held_tags", "reconnect_listeners"]

log = logging.getLogger(__name__)

# Called with the time each time a consumer has connected again (the io worker's sweeper: its recovery pass
# finds tasks Redis handed to the dead connection's BRPOP as it thawed, core_worker/sweeper.py).
reconnect_listeners: list[Callable[[float], None]] = []


def held_tags(channel: Any) -> list[str]:
    """Delivery tags a kombu virtual channel still holds unacknowledged (its QoS ``_delivered``)."""
    qos = getattr(channel, "_qos", None)
    if qos is None:
        return []
    qos._flush()  # drop the tags acknowledged since the last delivery
    tags = [str(tag) for tag in qos._delivered]
    # Handled here from now on: kombu's retry at garbage collection would only fail on the detached transport.
    qos._delivered.clear()
    qos._delivered.restored = True
    qos._on_collect.cancel()
    return tags


class RestoreHeldTasks(bootsteps.StartStopStep):
    """Consumer step: on every (re)connect, restore what the previous connection's task channel held."""

    requires = (Tasks,)
    label = "restore held tasks"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.channel: Any = None
        self.pending: list[str] = []

    def start(self, parent: Any) -> None:
        channel = parent.task_consumer.channel
        previous, self.channel = self.channel, channel
        if previous is not None and previous is not channel:
            self.pending += held_tags(previous)
            for listener in reconnect_listeners:
                listener(time.time())
        if self.pending:
            self.pending = restore(channel, self.pending)

    # stop/shutdown: nothing to do; the tags are read from the old channel on the next start.


def restore(channel: Any, tags: list[str]) -> list[str]:
    """Restore ``tags`` from the ``unacked`` hash through ``channel``; returns those that failed."""
    restored, failed = 0, []
    for tag in tags:
        try:
            channel.qos.restore_by_tag(tag)
            restored += 1
        except Exception as exc:  # Redis gone again: keep it for the next reconnect (the backstops remain)
            log.warning("could not restore held task %s after reconnecting: %s", tag, exc)
            failed.append(tag)
    log.warning("broker connection re-established: %d task(s) held on the lost connection put back in their "
                "queue, %d left for the next reconnect", restored, len(failed))
    return failed
