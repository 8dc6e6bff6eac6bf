"""Real processes for integration tests: Redis, gunicorn, Celery workers, a callback receiver."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from operator_tools.embedded_redis import redis_server_command
from tasks.keys import Keys
from tests.support.factories import API_KEYS, AUTH

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Each queue's worker entry module, as the Procfile starts them.
WORKER_APPS = {"core": "core_worker.llm_worker", "deliver": "core_worker.delivery_worker",
               "convert": "edge.convert_worker", "helpers": "core_worker.helper_worker"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Proc:
    """A subprocess in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.popen = subprocess.Popen(
            self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal_group(self, sig: int) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class RedisServer:
    """A real redis-server on a free port with AOF, restartable with its data."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = Proc("redis", redis_server_command(self.port, data_dir), dict(os.environ), data_dir)
        self.wait_ready()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def wait_ready(self) -> None:
        wait_until(lambda: bool(self.client().ping()), 20, "redis")

    def stop(self) -> None:
        self.proc.stop()

    def restart(self) -> None:
        self.proc.start()
        self.wait_ready()


@dataclass
class Callback:
    webhook_id: str
    body: dict[str, Any]
    received_at: float


@dataclass
class CallbackReceiver:
    """A loopback HTTP listener that accepts only correctly signed callbacks."""

    secret: str
    status: int = 200
    delay: float = 0.0  # seconds between recording a callback and answering it (a slow receiver)
    received: list[Callback] = field(default_factory=list)
    rejected: int = 0

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(raw, headers)
                except WebhookVerificationError:
                    receiver.rejected += 1
                    self._answer(401)
                    return
                if receiver.status < 300:
                    with lock:
                        receiver.received.append(Callback(headers["webhook-id"], json.loads(raw), time.time()))
                if receiver.delay:
                    time.sleep(receiver.delay)
                self._answer(receiver.status)

            def _answer(self, status: int) -> None:
                with contextlib.suppress(OSError):  # the sender may have died meanwhile (fault tests kill it)
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def for_message(self, message_id: str) -> list[Callback]:
        return [c for c in self.received if c.webhook_id == message_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class System:
    """The edge and the workers, started as `make run` would, against a test Redis."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.port = int(env["PORT"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, Proc] = {}

    def start_edge(self) -> Proc:
        argv = [str(BIN / "gunicorn"), "--config", "python:edge.gunicorn_conf", "edge.app:create_app()"]
        proc = self.procs["edge"] = Proc("edge", argv, self.env, self.log_dir)
        wait_until(lambda: requests.get(f"{self.base_url}/healthz", timeout=1).ok, 30, "the edge")
        return proc

    def start_worker(self, name: str, queue: str, *, pool: str = "threads", concurrency: int = 1) -> Proc:
        proc = self._worker(name, queue, pool, concurrency)
        self._wait_ready(proc)
        return proc

    def start_all(self, *, io_concurrency: int = 4) -> System:
        """The edge, the LLM worker and the three io workers, as the Procfile runs them.  The workers start
        together, since their start-up is most of a test module's time."""
        self.start_edge()
        workers = [self.core_worker("core"), *self.io_workers(io_concurrency)]
        for proc in workers:
            self._wait_ready(proc)
        return self

    def core_worker(self, name: str, threads: int | None = None) -> Proc:
        """An LLM worker as the Procfile starts it: the threads pool, ``LLM_PARALLEL`` task threads unless
        ``threads`` says otherwise (started, not yet ready)."""
        if threads is None:
            from tasks.settings import load_settings

            threads = load_settings(self.env).parallel_conversations
        return self._worker(name, "core", "threads", threads)

    def io_workers(self, concurrency: int) -> list[Proc]:
        """The delivery, convert and helper workers, started (not yet ready)."""
        return [self._worker("io", "deliver", "threads", concurrency),
                self._worker("convert", "convert", "threads", concurrency),
                self._worker("helpers", "helpers", "threads", concurrency)]

    def _worker(self, name: str, queue: str, pool: str, concurrency: int) -> Proc:
        argv = [
            str(BIN / "celery"), "-A", WORKER_APPS[queue], "worker", "-Q", queue, "--pool", pool,
            "--concurrency", str(concurrency), "--hostname", f"{name}@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle",
        ]
        proc = self.procs[name] = Proc(name, argv, self.env, self.log_dir)
        return proc

    @staticmethod
    def _wait_ready(proc: Proc) -> None:
        wait_until(lambda: " ready." in proc.log(), 60, f"worker {proc.name}", interval=0.2)

    def post(self, **body: Any) -> requests.Response:
        return requests.post(f"{self.base_url}/v1/messages", json=body, headers=AUTH, timeout=15)

    def status(self, message_id: str, wait: float = 0) -> dict[str, Any]:
        response = requests.get(f"{self.base_url}/v1/messages/{message_id}", params={"wait": wait}, headers=AUTH,
                                timeout=wait + 10)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def channel_status(self, message_id: str, wait: float = 0) -> dict[str, Any]:
        """``status`` for a provider channel's message (no client key reads it): read in Redis, waiting up to
        ``wait`` seconds for it to be answered or failed."""
        deadline = time.monotonic() + wait
        while True:
            record = self.stored(message_id)
            if record is None:
                raise LookupError(f"no message {message_id}")
            if record["status"] in ("answered", "failed") or time.monotonic() >= deadline:
                return record
            time.sleep(0.1)

    def stored(self, message_id: str) -> dict[str, Any] | None:
        """A message's public view read from Redis: for a channel's message, which no client key may read."""
        from redis_stores.messages import MessageStore

        client = redis.Redis.from_url(self.env["REDIS_URL"], decode_responses=True)
        try:
            store = MessageStore(client, Keys(self.env.get("KEY_PREFIX", "sb")), status_ttl=60, idempotency_ttl=60)
            record = store.get(message_id)
            return record.public() if record else None
        finally:
            client.close()

    def logs(self) -> str:
        return "\n".join(f"===== {name}\n{proc.log()[-4000:]}" for name, proc in self.procs.items())

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def system_env(redis_url: str, secret: str, model: Path, **overrides: str) -> dict[str, str]:
    """Environment of every process: short timeouts so recoveries happen within a test."""
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
        "PYTHONPATH": str(ROOT),  # custom test backends live in tests/support/
    }
    env.update(overrides)
    return env
