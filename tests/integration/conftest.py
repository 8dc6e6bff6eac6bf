from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core_worker.tiny_model import write_tiny_model
from tasks.signing import new_secret
from tests.factories import API_KEYS
from tests.integration.harness import CallbackReceiver, RedisServer, System, free_port


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.gguf"
    write_tiny_model(path)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (AOF on), for a test that kills, freezes or restarts it."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.proc.signal_group(signal.SIGCONT)
    server.stop()


@pytest.fixture
def clean_redis(redis_server: RedisServer) -> RedisServer:
    redis_server.client().flushall()
    return redis_server


@pytest.fixture(scope="session")
def secret() -> str:
    return new_secret()


@pytest.fixture
def callbacks(secret: str) -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver(secret)
    yield receiver
    receiver.close()


def system_env(redis_url: str, secret: str, model: Path, **overrides: str) -> dict[str, str]:
    """Environment of every process: short timeouts so recoveries happen within a test."""
    import os

    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SWITCHBOARD_SECRET": secret,
        "API_KEYS": API_KEYS,
        "MODEL_PATH": str(model),
        "FILES_DIR": tempfile.mkdtemp(prefix="switchboard-files-"),
        "LLM_BACKEND": "llama_cpp",
        "LLM_CONTEXT": "2048",
        "LLM_MAX_TOKENS": "24",
        "LLM_THREADS": "1",
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "INTERNAL_BASE_URL": f"http://127.0.0.1:{port}",
        "EDGE_WORKERS": "1",
        "EDGE_THREADS": "8",
        "VISIBILITY_TIMEOUT": "12",
        "TASK_SOFT_TIME_LIMIT": "8",
        "TASK_TIME_LIMIT": "10",
        "UNACKED_RESTORE_INTERVAL": "1",
        "SESSION_LOCK_SECONDS": "3",
        "SESSION_RETRY_SECONDS": "0.2",
        "REDIS_SOCKET_TIMEOUT": "2",
        "REDIS_CONNECT_TIMEOUT": "1",
        "REDIS_HEALTH_CHECK_INTERVAL": "2",
        "DELIVERY_BACKOFF_BASE": "0.2",
        "DELIVERY_BACKOFF_MAX": "2",
        "HELPER_TIMEOUT": "2",
        "HELPER_MAX_TIMEOUT": "3",
        "HELPER_RETRIES": "1",
        "HELPER_BACKOFF_BASE": "0.2",
        "HELPER_HEARTBEAT_INTERVAL": "1",
        "HELPER_SYNC_INTERVAL": "0.5",
        "CIRCUIT_RESET_SECONDS": "5",
        "HF_HUB_OFFLINE": "1",
        # counted as in production, never reached by a test's bursts (tests/security sets them low)
        "RATE_LIMIT_IP": "100000/minute",
        "RATE_LIMIT_USER": "100000/minute",
        "RATE_LIMIT_UPLOADS": "100000/minute",
        "RATE_LIMIT_SENDER": "100000/minute",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # custom test backends live in tests/
    }
    env.update(overrides)
    return env


@pytest.fixture
def make_system(
    clean_redis: RedisServer, secret: str, tiny_model_file: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[object]:
    systems: list[System] = []

    def make(redis_url: str | None = None, **overrides: str) -> System:
        env = system_env(redis_url or clean_redis.url, secret, tiny_model_file, **overrides)
        system = System(env, tmp_path)
        systems.append(system)
        return system

    yield make
    for system in systems:
        system.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(system.logs())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
