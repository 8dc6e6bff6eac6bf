"""The broker connection every Celery app of the project uses: short reconnect pauses, the usual URL in logs."""

from __future__ import annotations

import pytest
from kombu.exceptions import OperationalError

from tasks.broker_transport import RECONNECT_MAX, BrokerConnection, Transport
from tasks.celery_factory import create_celery
from tasks.settings import Settings
from tests.support.harness import free_port


def test_celery_apps_connect_with_the_project_transport_and_connection() -> None:
    app = create_celery(Settings(redis_url="redis://127.0.0.1:6390/2"))
    connection = app.connection_for_read()
    assert isinstance(connection, BrokerConnection)
    assert connection.get_transport_cls() is Transport
    assert connection.as_uri() == "redis://:**@127.0.0.1:6390/2"  # as kombu's own prints it


def test_a_lost_broker_is_tried_again_within_seconds_not_kombus_growing_pauses() -> None:
    pauses: list[float] = []
    connection = BrokerConnection(f"redis://127.0.0.1:{free_port()}/0", transport=Transport,
                                  connect_timeout=0.5)
    with pytest.raises(OperationalError):  # nothing listens there: refused at once, every try
        connection.ensure_connection(lambda _exc, pause: pauses.append(pause), max_retries=5)
    assert pauses == [0.5, 1.0, 1.5, 2.0, RECONNECT_MAX]  # kombu's own: 2, 4, 6, 8, 10 (up to 30)
