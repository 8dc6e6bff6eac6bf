"""Property, through the real system: every input the edge takes with a 2xx ends answered or failed within
MAX_ATTEMPTS; every other input is a 4xx JSON naming the problem, never a 5xx.

Hypothesis draws ``POST /v1/messages`` bodies (users and sessions of every length and Unicode category,
with ``:``, ``#`` and line breaks; texts; attachments; metadata) and ``GET /v1/messages/<id>`` query
strings, against real gunicorn, Celery workers and Redis. The model is the scripted test backend (an echo:
what is tested is admission and the message's fate, not what a model says). Fixed seed, bounded examples.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import redis
import requests
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from tasks.keys import Keys
from tests.support.factories import AUTH
from tests.support.harness import System

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]
MAX_ATTEMPTS = 3
EXAMPLES = 300
SETTLE_SECONDS = 120  # a budget for the product: every accepted message has ended by then

NAME_ALPHABET = st.characters(codec="utf-8", categories=None)  # every category, surrogates excluded by the codec
names = st.one_of(
    st.from_regex(r"[\w.@+:=-]{1,128}", fullmatch=True),  # what the docs allow, \w in all of Unicode
    st.from_regex(r"[a-z0-9]{1,128}", fullmatch=True),
    st.text(alphabet="abcXYZ019.@+:=-_#\n\r ", min_size=0, max_size=260),
    st.text(alphabet=NAME_ALPHABET, min_size=0, max_size=140),
    st.sampled_from(["alice", "alice\n", "a" * 128, "a" * 129, "x:y", "x#y", "", " ", "ä", "\u2028"]),
)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
attachments = st.lists(st.fixed_dictionaries(
    {"url": st.one_of(st.just("http://127.0.0.1:9/f.txt"),
                      st.builds(lambda s: "http://127.0.0.1:9/" + s, st.text(alphabet="abc/%?=", max_size=300)),
                      st.just("http://127.0.0.1:9/" + "a" * 2100), st.text(max_size=30)),
     "mime": st.sampled_from(["text/plain", "image/png", "application/x-unknown", "text", "text/plain\n"])},
    optional={"name": st.text(max_size=300), "size": st.integers(min_value=-1, max_value=10**7)}), max_size=3)
bodies = st.fixed_dictionaries(
    {"user": names, "text": st.one_of(st.text(min_size=1, max_size=300), st.just(""), st.just("word " * 3000))},
    optional={"session": st.one_of(st.none(), names), "metadata": st.dictionaries(st.text(max_size=10), json_values,
                                                                                   max_size=4),
              "attachments": attachments, "stream": st.booleans()},
)
queries = st.dictionaries(st.sampled_from(["wait", "partial", "x"]),
                          st.one_of(st.text(max_size=12), st.sampled_from(["0", "1", "²", "-1", "nan", "1e9", "0.1"])),
                          max_size=3)


@pytest.fixture
def system(make_system: MakeSystem) -> System:
    return make_system(
        LLM_BACKEND="tests.support.scripted_backend:factory", MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        MEDIA_FETCH_TIMEOUT="1", MEDIA_FETCH_RETRIES="0", MEDIA_CONVERT_TIMEOUT="5",
    ).start_all()


def assert_client_error(response: requests.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body


def test_every_accepted_message_ends_and_every_refused_one_is_a_4xx_json(system: System) -> None:
    accepted: list[str] = []
    refused: dict[int, int] = {}
    session = requests.Session()
    session.headers.update(AUTH)

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(HealthCheck), phases=[hypothesis.Phase.generate])
    @given(body=bodies, query=queries)
    def post_then_query(body: dict[str, Any], query: dict[str, str]) -> None:
        response = session.post(f"{system.base_url}/v1/messages", data=json.dumps(body),
                                headers={"Content-Type": "application/json"}, timeout=15)
        if response.status_code == 202:
            message_id = response.json()["message_id"]
            accepted.append(message_id)
            status = session.get(f"{system.base_url}/v1/messages/{message_id}",
                                 params={**query, "wait": query.get("wait", "0")[:5]}, timeout=40)
            assert status.status_code == 200 or (status.status_code == 400 and status.json()["error"]), status.text
        else:
            assert_client_error(response)
            refused[response.status_code] = refused.get(response.status_code, 0) + 1

    post_then_query()
    print(f"admission property: {len(accepted)} accepted, refused by status {refused}")
    assert accepted and refused  # both sides of the property were exercised

    client = redis.Redis.from_url(system.env["REDIS_URL"], decode_responses=True)
    keys = Keys(system.env.get("SWITCHBOARD_KEY_PREFIX", "sb"))
    deadline = time.monotonic() + SETTLE_SECONDS
    open_ids = list(accepted)
    while open_ids and time.monotonic() < deadline:
        open_ids = [m for m in open_ids if client.hget(keys.message(m), "status") not in ("answered", "failed")]
        time.sleep(0.5)
    assert not open_ids, f"{len(open_ids)} accepted never ended, e.g. {client.hgetall(keys.message(open_ids[0]))}"
    attempts = {m: int(client.hget(keys.message(m), "attempts") or 0) for m in accepted}
    assert max(attempts.values()) <= MAX_ATTEMPTS, {m: a for m, a in attempts.items() if a > MAX_ATTEMPTS}
    failed = [m for m in accepted if client.hget(keys.message(m), "status") == "failed"]
    print(f"admission property: all ended; {len(failed)} failed: "
          + "; ".join(sorted({str(client.hget(keys.message(m), "error")) for m in failed}))[:2000])
