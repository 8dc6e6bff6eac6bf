from __future__ import annotations

from typing import Any

import pytest

from tasks.celery_factory import create_celery
from tasks.names import DELIVER_REPLY, HANDLE_MESSAGE, helper_queue
from tasks.settings import Settings


@pytest.fixture
def conf(settings: Settings) -> Any:
    return create_celery(settings).conf


@pytest.mark.parametrize(
    ("task", "queue"),
    [(HANDLE_MESSAGE, "core"), (DELIVER_REPLY, "deliver"), ("convert.pdf", "convert")],
)
def test_tasks_are_routed_by_name_pattern(settings: Settings, task: str, queue: str) -> None:
    app = create_celery(settings)
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue


def test_each_helper_gets_its_own_queue() -> None:
    assert helper_queue("weather") == "helper.weather"


def test_reliability_settings_follow_celerys_guidance(conf: Any, settings: Settings) -> None:
    c = conf
    assert c.task_acks_late and c.task_reject_on_worker_lost
    assert c.worker_prefetch_multiplier == 1
    assert c.accept_content == ["json"] and c.task_serializer == "json"
    assert c.task_ignore_result and c.result_backend is None
    transport = c.broker_transport_options
    assert c.task_time_limit < transport["visibility_timeout"]
    assert transport["socket_timeout"] and transport["health_check_interval"]
    assert transport["unacked_restore_throttle"] == 1
    assert c.worker_proc_alive_timeout == settings.model_load_timeout > 4  # a model loads before the child is up


def test_creating_an_app_connects_to_nothing(settings: Settings) -> None:
    app = create_celery(settings.replace(redis_url="redis://203.0.113.1:1/0"))
    assert app.conf.broker_url == "redis://203.0.113.1:1/0"
