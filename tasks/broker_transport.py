"""kombu's Redis transport, with a channel that can always be closed after its connection died.

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
"""

from __future__ import annotations

from queue import Empty

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport"]


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
