"""The operator's view against real processes: status, metrics and logs of one message's journey.

One system (gunicorn edge, threads-pool core worker and its model process, threads io worker, real
Redis, the tiny GGUF model through llama.cpp) answers a message with a
callback; then ``GET /v1/status`` shows both workers by heartbeat (the core's
model loaded in its pool process), ``GET /metrics`` counts the message in
Prometheus text, and the message id is in the edge's, the core worker's and
the io worker's JSON log lines.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.factories import AUTH
from tests.support.harness import BIN, CallbackReceiver, Proc, System, free_port, wait_until
from tests.support.traffic import child_pids

pytestmark = pytest.mark.integration

MakeSystem = Callable[..., System]


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_status_metrics_and_logs_follow_one_message(make_system: MakeSystem, callbacks: CallbackReceiver) -> None:
    system = make_system(METRICS_FLUSH_INTERVAL="0.2", WORKER_HEARTBEAT_INTERVAL="0.5", LOG_FORMAT="json")
    system.start_all(io_concurrency=2)

    message_id = system.post(user="olga", text="Hello there", reply_url=callbacks.url).json()["message_id"]
    wait_until(lambda: len(callbacks.for_message(message_id)) == 1, 60, "the callback")

    # -- status: both workers by heartbeat, the model loaded in the core's pool process
    def status() -> dict[str, Any]:
        body: dict[str, Any] = requests.get(f"{system.base_url}/v1/status", timeout=10).json()
        return body

    wait_until(lambda: status()["workers_alive"].get("core") == 1 and status()["workers_alive"].get("deliver") == 1,
               30, "both workers in the status")
    body = status()
    assert set(body["queues"]) >= {"core", "deliver", "convert"}
    assert body["workers_alive"]["convert"] == 1
    core = next(w for w in body["workers"] if "core" in w["queues"])
    assert core["alive"] and core["pool"] == "threads" and core["concurrency"] == 4  # LLM_PARALLEL task threads
    # The threads pool's one process reports the model's process; its first beat may predate the model.
    wait_until(lambda: next(w for w in status()["workers"] if "core" in w["queues"])["model"]
               ["last_generation"] is not None, 10, "the core's last generation in its heartbeat")
    model = next(w for w in status()["workers"] if "core" in w["queues"])["model"]
    assert model["backend"] == "llama_cpp" and model["model"] == "tiny.gguf" and model["parallel"] == 4
    assert model["loaded"] and model["model_pid"] in child_pids(system.procs["core"].popen.pid)  # type: ignore[union-attr]
    io = next(w for w in body["workers"] if "deliver" in w["queues"])
    assert io["pool"] == "threads" and io["model"] is None
    assert body["dead_letters"] == 0
    assert "ping" not in body
    pinged = requests.get(f"{system.base_url}/v1/status", params={"ping": "1"}, timeout=10).json()
    assert pinged["ping"] is None or isinstance(pinged["ping"], list)

    # -- metrics: the message counted once, its reply's latency observed, the model's tokens counted
    def counted() -> bool:
        found = samples(system.base_url)
        return (found.get(("switchboard_reply_latency_seconds_count", (("channel", "api"),))) == 1.0
                and found.get(("switchboard_generation_seconds_count", (("backend", "llama_cpp"),)), 0) >= 1)

    wait_until(counted, 20, "the metrics flushed")
    found = samples(system.base_url)
    assert found[("switchboard_messages_accepted_total", (("channel", "api"),))] == 1.0
    assert found[("switchboard_replies_total", (("channel", "api"), ("outcome", "delivered")))] == 1.0
    assert found[("switchboard_http_requests_total", (("channel", "api"), ("status", "202")))] == 1.0
    assert found[("switchboard_generated_tokens_total", (("backend", "llama_cpp"),))] >= 1
    assert found[("switchboard_queue_depth", (("queue", "core"),))] == 0.0
    assert found[("switchboard_workers_alive", (("queue", "core"),))] == 1.0
    assert found[("switchboard_dead_letters", ())] == 0.0
    task_counts = {labels: v for (name, labels), v in found.items() if name == "switchboard_task_seconds_count"}
    assert task_counts[(("state", "SUCCESS"), ("task", "core.handle_message"))] >= 1
    assert task_counts[(("state", "SUCCESS"), ("task", "deliver.deliver_reply"))] >= 1

    # -- logs: one JSON object per line, the message id in the edge's, the core's and the io worker's
    def has_id(name: str) -> bool:
        return any(line.get("message_id") == message_id for line in json_lines(system.procs[name].log()))

    for name, role in (("edge", "edge"), ("core", "core"), ("io", "io")):
        wait_until(functools.partial(has_id, name), 10, f"{name}'s lines")
        lines = json_lines(system.procs[name].log())
        tagged = [line for line in lines if line.get("message_id") == message_id]
        assert tagged, f"no {name} log line carries {message_id}"
        assert all({"ts", "level", "logger", "role", "message"} <= set(line) for line in tagged)
        assert {line["role"] for line in tagged} == {role}
        assert all(line["session_id"] == "api:tests:olga" for line in tagged)


def test_a_killed_worker_shows_as_not_alive_and_a_stopped_one_disappears(make_system: MakeSystem) -> None:
    system = make_system(WORKER_HEARTBEAT_INTERVAL="0.5", LLM_BACKEND="tests.support.scripted_backend:factory")
    system.start_edge()
    for proc in system.io_workers(2):
        system._wait_ready(proc)
    core = system.start_worker("core", "core")

    def workers() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = requests.get(f"{system.base_url}/v1/status", timeout=10).json()["workers"]
        return found

    wait_until(lambda: any("core" in w["queues"] and w["alive"] for w in workers()), 30, "the core worker")
    core.kill()
    wait_until(lambda: all(not w["alive"] for w in workers() if "core" in w["queues"]), 30, "the core to go stale")
    body = requests.get(f"{system.base_url}/v1/status", timeout=10).json()
    assert body["workers_alive"]["core"] == 0
    assert body["workers_alive"]["deliver"] == 1

    system.procs["io"].stop()
    wait_until(lambda: not any("deliver" in w["queues"] for w in workers()), 30, "the stopped io worker to leave")


def test_flower_starts_against_the_broker_and_sees_the_workers(make_system: MakeSystem) -> None:
    system = make_system(LLM_BACKEND="tests.support.scripted_backend:factory")
    for proc in system.io_workers(2):
        system._wait_ready(proc)
    port = free_port()
    env = {**system.env, "FLOWER_PORT": str(port), "FLOWER_UNAUTHENTICATED_API": "1"}
    argv = [str(BIN / "celery"), "-A", "operator_tools.flower_app", "flower", "--address=127.0.0.1", f"--port={port}",
            "--enable-events"]
    flower = system.procs["flower"] = Proc("flower", argv, env, system.log_dir)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(f"{base}/healthcheck", timeout=2).text == "OK", 60, "flower")

    def workers() -> dict[str, Any]:
        found: dict[str, Any] = requests.get(f"{base}/api/workers", params={"refresh": "1"}, timeout=20).json()
        return found

    wait_until(lambda: any(name.startswith("io@") for name in workers()), 60, "flower to see the io worker")
    assert flower.popen is not None and flower.popen.poll() is None


def test_a_converted_upload_keeps_its_message_id_through_conversion_and_answer(
    make_system: MakeSystem, callbacks: CallbackReceiver
) -> None:
    system = make_system(LLM_BACKEND="tests.support.scripted_backend:factory")
    system.start_all(io_concurrency=2)
    response = requests.post(f"{system.base_url}/v1/files", data={"user": "gil", "reply_url": callbacks.url},
                             files={"file": ("notes.txt", b"The meeting is on Tuesday.", "text/plain")},
                             headers=AUTH, timeout=15)
    assert response.status_code == 202, response.text
    message_id = response.json()["message_id"]
    wait_until(lambda: len(callbacks.for_message(message_id)) == 1, 60, "the reply")

    def tagged(name: str, task: str) -> bool:
        lines = json_lines(system.procs[name].log())
        return any(line.get("message_id") == message_id and task in line["message"] for line in lines)

    # The callback arrives while the delivery task still runs: its own line follows a moment later.
    for name, task in (("convert", "convert.attachments"), ("core", "core.handle_message"),
                       ("io", "deliver.deliver_reply")):
        wait_until(functools.partial(tagged, name, task), 10, f"a {task} line with the id in {name}")


def test_helper_calls_show_in_status_metrics_and_logs(make_system: MakeSystem) -> None:
    from tests.support.helper_processes import TOKEN, Helpers
    from tests.support.scripted_backend import SCRIPTED

    system = make_system(LLM_BACKEND=SCRIPTED, HELPER_REGISTRATION_TOKEN=TOKEN, METRICS_FLUSH_INTERVAL="0.2",
                         WORKER_HEARTBEAT_INTERVAL="0.5")
    system.start_all(io_concurrency=2)
    helpers = Helpers(system)
    try:
        calculator = helpers.start("calculator", "examples/helpers/calculator.py:helper")
        ok = system.post(user="hal", text="/calculate 6 * 7").json()["message_id"]
        assert "42" in system.status(ok, wait=30)["reply"]["text"]
        calculator.kill()
        failed = system.post(user="ida", text="/calculate 1 + 1").json()["message_id"]
        assert "unavailable" in system.status(failed, wait=30)["reply"]["text"]

        def calls(outcome: str) -> float:
            key = ("switchboard_helper_call_seconds_count", (("helper", "calculator"), ("outcome", outcome)))
            return samples(system.base_url).get(key, 0.0)

        wait_until(lambda: calls("ok") == 1 and calls("error") >= 1, 20, "the helper calls in the metrics")
        body = requests.get(f"{system.base_url}/v1/status", timeout=10).json()
        (helper,) = body["helpers"]
        assert helper["name"] == "calculator" and helper["queue"] == "helper.calculator"
        assert body["queues"]["helper.calculator"] == 0
        wait_until(lambda: requests.get(f"{system.base_url}/v1/status", timeout=10).json()["workers_alive"]
                   .get("helper.calculator") == 1, 20, "the helper worker consuming the helper's queue")

        def helper_lines(message_id: str) -> list[dict[str, Any]]:
            return [line for line in json_lines(system.procs["helpers"].log())
                    if line.get("message_id") == message_id and "helper.call" in line["message"]]

        wait_until(lambda: bool(helper_lines(ok)) and bool(helper_lines(failed)), 10, "helper.call lines with ids")
    finally:
        helpers.stop()
