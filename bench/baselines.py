"""The baselines the benchmarks compare the product with, as importable entry points.

* ``bare_app``: a Celery app with the product's broker settings and one no-op
  task on its own queue (``celery -A bench.baselines:bare_app worker``).
* ``pong_main``: the far end of a raw Redis LPUSH/BRPOP ping-pong.
* ``bare_flask()``: a Flask app whose only route answers 202, run under the
  product's gunicorn settings (``gunicorn -c python:edge.gunicorn_conf
  'bench.baselines:bare_flask()'``).

Nothing here is product code; settings come from the environment like the
product's processes.
"""

from __future__ import annotations

import sys

import redis
from celery import Celery
from flask import Flask
from kombu import Queue

from redis_stores.redis_client import redis_client
from tasks.celery_factory import celery_config
from tasks.settings import Settings, load_settings

BARE_QUEUE = "bench"
NOOP_TASK = "bench.noop"

__all__ = ["BARE_QUEUE", "NOOP_TASK", "bare_app", "bare_flask", "make_bare_app", "pong_main"]


def make_bare_app(settings: Settings) -> Celery:
    """A tiny Celery app with the product's broker settings and one no-op task that LPUSHes a reply."""
    app = Celery("switchboard-bench", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.conf.update(task_default_queue=BARE_QUEUE, task_queues=[Queue(BARE_QUEUE)], task_routes={})
    clients: list[redis.Redis] = []

    @app.task(name=NOOP_TASK)
    def noop(reply_key: str) -> None:
        if not clients:
            clients.append(redis_client(settings))
        clients[0].lpush(reply_key, "1")

    return app


# What `celery -A bench.baselines:bare_app worker` runs; settings come from the worker's environment.
bare_app = make_bare_app(load_settings())


def pong_main(url: str, ping: str) -> None:
    """BRPOP a ping (its payload names the reply list), LPUSH "1" to that list; until "stop"."""
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=None)  # redis-py 8 defaults to 5 s
    while True:
        item = client.brpop([ping], timeout=300)
        if item is None or item[1] == "stop":
            return
        client.lpush(item[1], "1")


def bare_flask() -> Flask:
    """The cheapest Flask endpoint shaped like ours: read a JSON body, answer 202 with a small JSON body."""
    from flask import request

    app = Flask("bench-bare")

    @app.post("/v1/messages")
    def accept() -> tuple[dict[str, str], int]:
        request.get_data()
        return {"message_id": "bare", "status": "queued"}, 202

    @app.post("/v1/channels/twilio/sms")
    def twilio() -> tuple[str, int, dict[str, str]]:
        request.form.get("MessageSid")
        return "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response />", 200, {"Content-Type": "text/xml"}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":  # python -m bench.baselines pong URL PING
    if sys.argv[1:2] == ["pong"]:
        pong_main(sys.argv[2], sys.argv[3])
