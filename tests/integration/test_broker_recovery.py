"""A worker that loses Redis: its connection closes cleanly (``tasks/broker_transport.py``) and the tasks it
held go back to their queue on the next one (``celery_runtime/broker_recovery.py``).

A real redis-server and kombu's real Redis transport, used the way a Celery worker uses them: consume with
ack emulation, lose Redis (SIGKILL, AOF restart), close the connection as Celery's consumer does after a
connection error (``collect()``, then ``close()``), reconnect.
"""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from celery_runtime.broker_recovery import held_tags, restore
from tasks.celery_factory import BROKER_TRANSPORT
from tests.support.harness import RedisServer

pytestmark = pytest.mark.integration

QUEUE = "held"


def hold_three(url: str, transport: str = BROKER_TRANSPORT, *, idle: bool = True) -> tuple[Connection, Any]:
    """A worker's consumer connection holding three unacknowledged messages (kombu has them in its ``unacked``
    hash), with a remote-control channel beside it (an auto-delete fanout queue, as Celery's pidbox) and, if
    ``idle``, waiting in BRPOP for more."""
    with Connection(url) as producer:
        for n in range(3):
            producer.Producer().publish({"n": n}, routing_key=QUEUE, declare=[Queue(QUEUE)])
    connection = Connection(url, transport=transport, transport_options={"visibility_timeout": 3600})
    held: list[Any] = []
    consumer = connection.Consumer(Queue(QUEUE), callbacks=[lambda _body, message: held.append(message)])
    consumer.consume()
    control = Queue("worker.pidbox", Exchange("pidbox", type="fanout"), auto_delete=True)
    connection.Consumer(control, channel=connection.channel(), no_ack=True).consume()
    while len(held) < 3:
        connection.drain_events(timeout=5)
    if idle:  # the queue is empty: the BRPOP stays pending
        for _ in range(10):  # a drain may also return on a non-message event (the fanout's subscription reply)
            try:
                connection.drain_events(timeout=0.2)
            except TimeoutError:
                break
        else:
            raise AssertionError("drain_events kept returning with nothing queued")
        assert len(held) == 3 and consumer.channel._in_poll
    return connection, consumer.channel


def lose_redis(redis: RedisServer, connection: Connection) -> None:
    """Redis dies; the consumer closes its connection as Celery's does (``on_connection_error_after_connected``)."""
    redis.proc.kill()
    connection.collect(socket_timeout=5)
    connection.close()


def test_a_connection_lost_mid_brpop_closes_without_error(own_redis: RedisServer) -> None:
    connection, channel = hold_three(own_redis.url)
    lose_redis(own_redis, connection)
    assert channel.closed


def test_kombus_own_transport_still_fails_there(own_redis: RedisServer) -> None:
    """The upstream defect the transport works around; when this fails, kombu fixed it (drop the workaround)."""
    connection, _channel = hold_three(own_redis.url, transport="redis")
    with pytest.raises(AttributeError, match="hostname"):
        lose_redis(own_redis, connection)


def test_tasks_held_on_a_lost_connection_are_restored_on_the_next_one(own_redis: RedisServer) -> None:
    connection, channel = hold_three(own_redis.url)
    client = own_redis.client()
    assert client.hlen("unacked") == 3 and client.llen(QUEUE) == 0

    lose_redis(own_redis, connection)
    own_redis.restart()

    # kombu's own restore ran while Redis was down, and gave up.
    assert client.hlen("unacked") == 3 and client.llen(QUEUE) == 0

    with Connection(own_redis.url) as fresh:
        failed = restore(fresh.default_channel, held_tags(channel))
    assert failed == []
    assert client.hlen("unacked") == 0 and client.llen(QUEUE) == 3
    assert held_tags(channel) == []  # handed over once: the next reconnect does not restore them again


def test_restoring_a_task_that_was_acknowledged_meanwhile_does_nothing(own_redis: RedisServer) -> None:
    connection, channel = hold_three(own_redis.url, idle=False)
    tags = held_tags(channel)
    with Connection(own_redis.url) as fresh:
        fresh.default_channel.qos._remove_from_indices(tags[0]).execute()  # acknowledged by its worker
        assert restore(fresh.default_channel, tags) == []
        assert restore(fresh.default_channel, tags) == []  # twice: still each task once
    client = own_redis.client()
    assert client.hlen("unacked") == 0 and client.llen(QUEUE) == 2
    connection.release()
