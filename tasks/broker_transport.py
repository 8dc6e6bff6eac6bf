"""kombu's Redis transport and connection, fit for a Redis that goes away and comes back.

Two things differ from kombu's own, each for a measured defect (docs/reliability.md, "A Redis restart
cost minutes"): the channel can always be closed after its connection died, and a lost connection is
tried again every few seconds rather than on kombu's growing schedule.

**The channel.**

When a worker loses Redis while its consumer waits in ``BRPOP`` (the usual state of an idle worker),
kombu 5.7's ``Channel.close()`` first reads that BRPOP's reply, so a task popped at that moment is not
lost (celery/kombu#1733).  On a dead connection the read raises, and ``close()`` stops there: the
channel is neither closed nor detached.  Celery then closes the connection a second time
(``Consumer.on_connection_error_after_connected``: ``collect()``, then ``close()``); by then kombu has
detached the transport from its connection (``transport.client = None``), so the second
``Channel.close()`` builds a connection pool from nothing and raises ``AttributeError: 'NoneType' object
has no attribute 'hostname'`` in ``_connparams`` (the failure of celery/kombu#582, by a new path).
``ignore_errors`` lets only connection errors through, so the consumer dies with "Unrecoverable
error": the worker stops consuming for good, its held tasks wait in kombu's ``unacked`` hash for
``VISIBILITY_TIMEOUT``, and everything it would have delivered waits for the sweeper of another io
worker (fault suite, ``redis-kill-restart-aof``, docs/reliability.md).

Here a failed read of the pending BRPOP does not stop the close: its reply is gone with the connection
(Redis either never popped the task, or popped it and lost the pop with its unsaved writes, or the task
is in no list and the sweeper re-drives its message), and the rest of ``close()`` runs once, as kombu
meant it to.  Selected by ``tasks/celery_factory.py`` (``broker_transport``) for the ``redis://`` URL.

**The connection.**  A Celery consumer that lost its broker reconnects through
``Connection.ensure_connection`` with kombu's defaults: 2 s, then 4, 6, 8 ... up to 30 s between tries,
each try costing up to the connect or socket timeout against a frozen Redis.  After a 30 s freeze a
worker so came back up to 13 s after Redis did (``bench/redis_recovery.py``, ``sigstop-30s``).  Here the
pause between tries grows from 0.5 s by 0.5 s to at most ``RECONNECT_MAX`` seconds: a worker is back
within about that of Redis, and a few connection attempts a second per worker is nothing for Redis.
The ``app.amqp`` class of ``tasks/celery_factory.py`` makes Celery use it.
"""

from __future__ import annotations

from queue import Empty
from typing import Any

from celery.app.amqp import AMQP
from kombu import Connection
from kombu.transport import redis as kombu_redis

__all__ = ["AMQP_CLASS", "BROKER_TRANSPORT", "BrokerAMQP", "BrokerConnection", "Channel", "Transport"]

BROKER_TRANSPORT = "tasks.broker_transport:Transport"
AMQP_CLASS = "tasks.broker_transport:BrokerAMQP"
RECONNECT_START = 0.5
RECONNECT_STEP = 0.5
RECONNECT_MAX = 2.0


class Channel(kombu_redis.Channel):
    def close(self) -> None:
        if self._in_poll and not self.closed:
            try:
                self._brpop_read()
            except Empty:
                pass
            except self.connection_errors:
                pass  # the connection is gone, and the reply with it; _brpop_read reset _in_poll
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel


class BrokerConnection(Connection):
    def _ensure_connection(self, errback: Any = None, max_retries: Any = None,
                           interval_start: Any = RECONNECT_START, interval_step: Any = RECONNECT_STEP,
                           interval_max: Any = RECONNECT_MAX, callback: Any = None,
                           reraise_as_library_errors: Any = True, timeout: Any = None) -> Any:
        return super()._ensure_connection(errback, max_retries, interval_start, interval_step, interval_max,
                                          callback, reraise_as_library_errors, timeout)

    def as_uri(self, *args: Any, **kwargs: Any) -> str:
        """``redis://...`` in logs (kombu would print the transport's class path as the scheme)."""
        return str(super().as_uri(*args, **kwargs)).replace(f"{BROKER_TRANSPORT}://", "redis://", 1)


class BrokerAMQP(AMQP):
    Connection = BrokerConnection
    BrokerConnection = BrokerConnection
