"""Benchmark: Switchboard's pipeline overhead and model speed, each next to a baseline measured in the same run.

Run ``.venv/bin/python bench/pipeline.py [--quick] [--json OUT]`` from the repository root.

1. Pipeline overhead.  A real redis-server, the edge (gunicorn), a core worker
   and an io worker (``deliver`` queue, threads pool) run with the zero-cost
   echo backend (``bench.echo_backend:factory``).  One client sends
   ``POST /v1/messages`` with a ``reply_url`` one at a time and times from the
   POST to the signed callback's arrival at the receiver.  Baselines against
   the same Redis, all processes up at once and measured in interleaved rounds
   so background noise hits every row alike: a bare Celery no-op round trip (a
   bench-local app with the product's broker settings, ``--pool solo`` worker;
   the task LPUSHes a reply the client BLPOPs), a raw Redis LPUSH/BRPOP
   ping-pong between two processes, and one bare HTTP hop (a signed POST to
   the same callback receiver, a new connection each time, as a delivery).
2. Model speed.  For each model (the tiny test model; the TinyLlama-1.1B-shaped
   random Q4_0 model unless ``--quick``) and each local backend (llama_cpp,
   ctransformers): tokens/s of the library called directly (a child process,
   loaded with the arguments our backends use, on the worker's exact prompt)
   and tokens/s through the running system (``completion_tokens`` /
   ``generation_ms`` of the stored replies).  Direct calls and messages
   alternate, so the two models are loaded together but never compute at once.
   2 threads (LLM_THREADS=2); on the tiny model ctransformers also at 1 thread.
3. One busy core.  The same direct measurement with a busy-loop process
   holding one of the cores, at 2 threads and at 1 thread: what a model gets
   when the edge, another worker or anything else is busy next to it.

Hidden sub-commands used by the benchmark itself: ``_pong URL PING PONG`` (the
far end of the Redis ping-pong) and ``_direct JSON`` (a direct model runner
driven over stdin/stdout).  ``celery -A bench.pipeline:bare_app`` is the bare
Celery baseline's worker.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench`, `tests` and the product importable
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import requests  # noqa: E402
from celery import Celery  # noqa: E402
from kombu import Queue  # noqa: E402

from tasks.celery_factory import celery_config  # noqa: E402
from tasks.redis_client import redis_client  # noqa: E402
from tasks.settings import Settings, load_settings  # noqa: E402

BIN = Path(sys.executable).parent
CACHE = ROOT / "bench" / ".cache"
ECHO_BACKEND = "bench.echo_backend:factory"
BARE_QUEUE = "bench"
NOOP_TASK = "bench.noop"
PROMPT_TEXT = "Tell me a long story about the weather, the sea and the people of a small town."
MODEL_CONTEXT = 2048
MODEL_THREADS = 2
# Pause before each model call: the worker still acks and pops after the reply is visible, and a model
# call overlapping that work (ctransformers above all, see section 3) is measured slower.
SETTLE_SECONDS = 0.2


# --------------------------------------------------------------------------- bare Celery baseline
def make_bare_app(settings: Settings) -> Celery:
    """A tiny Celery app with the product's broker settings and one no-op task on its own queue."""
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


# What `celery -A bench.pipeline:bare_app worker` runs; settings come from the worker's environment.
bare_app = make_bare_app(load_settings())


# --------------------------------------------------------------------------- statistics and tables
def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Latency:
    name: str
    samples_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        s = self.samples_ms
        return {
            "name": self.name,
            "n": len(s),
            "p50_ms": percentile(s, 50),
            "p90_ms": percentile(s, 90),
            "p99_ms": percentile(s, 99),
            "mean_ms": statistics.fmean(s),
            "max_ms": max(s),
        }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table: first column left-aligned, the numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value >= 100:
            return f"{value:.0f}"
        if value >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def busy_fraction(seconds: float) -> float:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat), to flag a machine that is not idle."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return float("nan")
    total = total1 - total0
    return 1 - (idle1 - idle0) / total if total else float("nan")


# --------------------------------------------------------------------------- Redis ping-pong
def pong_main(url: str, ping: str, pong: str) -> None:
    """The far end of the ping-pong: BRPOP a ping, LPUSH it back, until "stop"."""
    client = redis.Redis.from_url(url, decode_responses=True)
    while True:
        item = client.brpop([ping], timeout=120)
        if item is None or item[1] == "stop":
            return
        client.lpush(pong, item[1])


class PingPong:
    """Client side of the raw Redis baseline: LPUSH a ping, BRPOP the pong another process pushed back."""

    PING, PONG = "bench:ping", "bench:pong"

    def __init__(self, url: str) -> None:
        self.child = subprocess.Popen([sys.executable, __file__, "_pong", url, self.PING, self.PONG], cwd=ROOT)
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.latency = Latency("Redis LPUSH/BRPOP ping-pong, 2 processes")

    def measure(self, n: int, *, record: bool = True) -> None:
        for i in range(n):
            started = time.perf_counter()
            self.client.lpush(self.PING, str(i))
            item = self.client.brpop([self.PONG], timeout=10)
            elapsed = (time.perf_counter() - started) * 1000
            if item is None:
                raise RuntimeError("the ping-pong child did not answer")
            if record:
                self.latency.samples_ms.append(elapsed)

    def close(self) -> None:
        self.client.lpush(self.PING, "stop")
        self.child.wait(timeout=10)


class BareCelery:
    """Client side of the bare Celery baseline: send_task a no-op, BLPOP the reply it LPUSHes."""

    REPLY_KEY = "bench:celery-reply"

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        from tests.integration.harness import Proc, wait_until

        argv = [
            str(BIN / "celery"), "-A", "bench.pipeline:bare_app", "worker", "-Q", BARE_QUEUE, "--pool", "solo",
            "--hostname", "bench@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
        ]
        self.proc = Proc("bare-celery", argv, env, log_dir)
        wait_until(lambda: " ready." in self.proc.log(), 60, "the bare Celery worker", interval=0.1)
        settings = load_settings(env)
        self.app = make_bare_app(settings)
        self.client = redis_client(settings)
        self.latency = Latency("bare Celery no-op round trip, solo worker")

    def measure(self, n: int, *, record: bool = True) -> None:
        for _ in range(n):
            started = time.perf_counter()
            self.app.send_task(NOOP_TASK, args=[self.REPLY_KEY], queue=BARE_QUEUE)
            item = self.client.blpop([self.REPLY_KEY], timeout=10)
            elapsed = (time.perf_counter() - started) * 1000
            if item is None:
                raise RuntimeError(f"bare Celery task not answered:\n{self.proc.log()[-3000:]}")
            if record:
                self.latency.samples_ms.append(elapsed)

    def close(self) -> None:
        self.app.close()
        self.proc.stop()


class BareHttp:
    """Baseline of one HTTP hop: a signed JSON POST, new connection each time (as a delivery), to the receiver."""

    def __init__(self, secret: str, url: str) -> None:
        self.secret, self.url = secret, url
        self.latency = Latency("bare HTTP POST, signed, to the callback receiver")
        self.sent = 0

    def measure(self, n: int, *, record: bool = True) -> None:
        from tasks.signing import sign_headers

        for _ in range(n):
            self.sent += 1
            webhook_id = f"bench-http-{self.sent}"
            started = time.perf_counter()
            body = json.dumps({"type": "bench", "message_id": webhook_id, "text": "pong"}, separators=(",", ":"))
            response = requests.post(self.url, data=body.encode(), headers=sign_headers(self.secret, webhook_id, body),
                                     timeout=10)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"the callback receiver answered {response.status_code}")
            if record:
                self.latency.samples_ms.append(elapsed)


# --------------------------------------------------------------------------- the pipeline
class ArrivalList(list[Any]):
    """Stands in for CallbackReceiver.received: wakes a waiter on every append (no polling delay)."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()

    def append(self, item: Any) -> None:
        with self.cond:
            super().append(item)
            self.cond.notify_all()

    def wait_for(self, message_id: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for callback in reversed(self):
                    if callback.webhook_id == message_id:
                        return callback
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no callback for {message_id} within {timeout:.0f}s")
                self.cond.wait(left)


class PipelineSender:
    """One sequential sender: POST, wait for the signed callback, send the next."""

    def __init__(self, base_url: str, callback_url: str, arrivals: ArrivalList, *, one_user: bool, run_id: str):
        self.base_url, self.callback_url, self.arrivals = base_url, callback_url, arrivals
        self.one_user, self.run_id = one_user, run_id
        label = "one user" if one_user else "a new user per message"
        self.total = Latency(f"pipeline POST -> callback received ({label})")
        self.accepted = Latency(f"  of which POST -> 202 ({label})")
        self.to_reply = Latency(f"  POST -> reply created in core, ms clock ({label})")
        self.to_callback = Latency(f"  reply created -> callback received ({label})")
        self.session = requests.Session()
        self.sent = 0

    def measure(self, n: int, *, record: bool = True) -> None:
        for _ in range(n):
            self.sent += 1
            user = f"bench-{self.run_id}-one" if self.one_user else f"bench-{self.run_id}-{self.sent}"
            body = {"user": user, "text": f"ping {self.sent}", "reply_url": self.callback_url}
            sent_at = time.time()
            started = time.perf_counter()
            response = self.session.post(f"{self.base_url}/v1/messages", json=body, timeout=15)
            accepted_ms = (time.perf_counter() - started) * 1000
            if response.status_code != 202:
                raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
            callback = self.arrivals.wait_for(response.json()["message_id"], 30)
            if record:
                created = dt.datetime.fromisoformat(callback.body["created_at"]).timestamp()
                self.total.samples_ms.append((callback.received_at - sent_at) * 1000)
                self.accepted.samples_ms.append(accepted_ms)
                self.to_reply.samples_ms.append((created - sent_at) * 1000)
                self.to_callback.samples_ms.append((callback.received_at - created) * 1000)

    def close(self) -> None:
        self.session.close()


def bench_env(redis_url: str, secret: str, model: Path, **overrides: str) -> dict[str, str]:
    """The integration tests' environment, with production time limits (a slow model must not be cut off)."""
    from tests.integration.conftest import system_env

    env = system_env(redis_url, secret, model)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "VISIBILITY_TIMEOUT": "600",
            "TASK_SOFT_TIME_LIMIT": "240",
            "TASK_TIME_LIMIT": "300",
            "SESSION_LOCK_SECONDS": "15",
            "SESSION_RETRY_SECONDS": "0.5",
            "UNACKED_RESTORE_INTERVAL": "10",
            "LLM_THREADS": str(MODEL_THREADS),
            "LLM_CONTEXT": str(MODEL_CONTEXT),
        }
    )
    env.update(overrides)
    return env


@contextmanager
def running_system(env: dict[str, str], log_dir: Path) -> Iterator[Any]:
    from tests.integration.harness import System

    system = System(env, log_dir)
    try:
        yield system
    except BaseException:
        print(f"\nprocess logs in {log_dir}; their tails:\n{system.logs()}", file=sys.stderr)
        raise
    finally:
        system.stop()


# --------------------------------------------------------------------------- model speed: direct
def _cpu_lib() -> str | None:
    """ctransformers' prebuilt library for this CPU (ctransformers' own rule, without its slow detection)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    if "avx2" in flags:
        return "avx2"
    return "avx" if "avx" in flags and "f16c" in flags else "basic"


class DirectModel:
    """The library loaded by hand with the load arguments of our backend, on the worker's exact prompt."""

    def __init__(self, backend: str, path: str, threads: int, n_ctx: int, text: str) -> None:
        from core_worker.chat_template import read_gguf_info, template_for_model
        from core_worker.llm.base import ChatMessage, effective_context

        settings = load_settings()
        self.backend, self.threads, self.temperature = backend, threads, settings.llm_temperature
        info = read_gguf_info(path)
        template = template_for_model(info)
        self.stop = list(template.stop)
        n_ctx = effective_context(n_ctx, info.context_length)
        system = [ChatMessage("system", settings.system_prompt)] if settings.system_prompt else []
        prompt = template.render([*system, ChatMessage("user", text)], add_generation_prompt=True)
        started = time.perf_counter()
        self.llm: Any
        if backend == "llama_cpp":
            from llama_cpp import Llama

            self.llm = Llama(
                model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, use_mmap=False,
                n_gpu_layers=0, verbose=False,
            )
            self.load_s = time.perf_counter() - started
            add_bos = not (template.bos_token and prompt.startswith(template.bos_token))
            self.tokens = list(self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))
        elif backend == "ctransformers":
            from ctransformers import LLM, Config

            config = Config(context_length=n_ctx, threads=threads, batch_size=512, mmap=False, gpu_layers=0)
            self.llm = LLM(path, "gguf", config=config, lib=_cpu_lib())
            self.load_s = time.perf_counter() - started
            # The ctransformers tokenizer cannot parse special-token text: split it out, as our backend does.
            specials = sorted(info.special_tokens, key=len, reverse=True)
            add_bos = info.add_bos_token and not (template.bos_token and prompt.startswith(template.bos_token))
            self.tokens = [self.llm.bos_token_id] if add_bos else []
            parts = re.split("(" + "|".join(map(re.escape, specials)) + ")", prompt) if specials else [prompt]
            for i, part in enumerate(parts):
                if part and i % 2:  # odd pieces are the captured special tokens
                    self.tokens.append(info.special_tokens[part])
                elif part:
                    self.tokens += self.llm.tokenize(part, add_bos_token=False)
        else:
            raise ValueError(f"unknown backend {backend!r}")

    def prompt_seconds(self) -> float:
        """Evaluate the whole prompt from an empty cache (llama_cpp: plus sampling one token)."""
        from core_worker.llm.base import DEFAULT_REPEAT_PENALTY, DEFAULT_TOP_K, DEFAULT_TOP_P

        if self.backend == "llama_cpp":
            self.llm.reset()
            started = time.perf_counter()
            self.llm.create_completion(
                prompt=self.tokens, max_tokens=1, temperature=self.temperature, top_k=DEFAULT_TOP_K,
                top_p=DEFAULT_TOP_P, repeat_penalty=DEFAULT_REPEAT_PENALTY, seed=1,
            )
            return time.perf_counter() - started
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reset() is "deprecated" but the only way to empty the cache
            self.llm.reset()
        started = time.perf_counter()
        self.llm.eval(self.tokens, batch_size=512, threads=self.threads)
        return time.perf_counter() - started

    def generate(self, limit: int) -> tuple[int, float]:
        """One completion of up to ``limit`` tokens with our sampling settings; (tokens, seconds)."""
        from core_worker.llm.base import DEFAULT_REPEAT_PENALTY, DEFAULT_TOP_K, DEFAULT_TOP_P

        seed = random.getrandbits(31)
        started = time.perf_counter()
        if self.backend == "llama_cpp":
            out: Any = self.llm.create_completion(
                prompt=self.tokens, max_tokens=limit, temperature=self.temperature, top_k=DEFAULT_TOP_K,
                top_p=DEFAULT_TOP_P, repeat_penalty=DEFAULT_REPEAT_PENALTY, stop=self.stop, seed=seed, stream=False,
            )
            count = int(out["usage"]["completion_tokens"])
        else:
            count = 0
            for _token in self.llm.generate(
                self.tokens, top_k=DEFAULT_TOP_K, top_p=DEFAULT_TOP_P, temperature=self.temperature,
                repetition_penalty=DEFAULT_REPEAT_PENALTY, seed=seed, threads=self.threads, reset=True,
            ):
                count += 1
                if count >= limit:
                    break
        return count, time.perf_counter() - started


def direct_main(spec: dict[str, Any], stdin: IO[str], stdout: IO[str]) -> None:
    """Child side: load, time the cold prompt, warm up, then answer ``gen N`` lines until ``quit``."""

    def say(obj: dict[str, Any]) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    model = DirectModel(spec["backend"], spec["model"], int(spec["threads"]), int(spec["n_ctx"]), spec["text"])
    prompt_s = statistics.median(model.prompt_seconds() for _ in range(int(spec.get("prompt_runs", 3))))
    model.generate(int(spec["max_tokens"]))  # warm-up: from here the prompt prefix is cached, as in the worker
    say({"load_s": model.load_s, "prompt_tokens": len(model.tokens), "prompt_tok_s": len(model.tokens) / prompt_s})
    for line in stdin:
        command = line.split()
        if command[:1] == ["gen"]:
            count, seconds = model.generate(int(command[1]))
            say({"completion_tokens": count, "seconds": seconds})
        else:
            return


class DirectRunner:
    """Parent side of a direct model child process."""

    def __init__(self, backend: str, model: Path, max_tokens: int, *, threads: int = MODEL_THREADS) -> None:
        spec = {
            "backend": backend, "model": str(model), "max_tokens": max_tokens, "threads": threads,
            "n_ctx": MODEL_CONTEXT, "text": PROMPT_TEXT,
        }
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "_direct", json.dumps(spec)], cwd=ROOT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the libraries may print; our lines are JSON objects
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result
        raise RuntimeError(f"the direct model child exited with {self.proc.wait()}")

    def generate(self, limit: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"gen {limit}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------- model speed: worker
def worker_message(system: Any, user: str) -> dict[str, Any]:
    """One message from a fresh user (so no history): the prompt is the direct run's prompt."""
    response = system.post(user=user, text=PROMPT_TEXT)
    if response.status_code != 202:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
    message_id = response.json()["message_id"]
    deadline = time.monotonic() + 300
    record = system.status(message_id, wait=30)
    while record["status"] not in ("answered", "failed") and time.monotonic() < deadline:
        record = system.status(message_id, wait=30)
    if record["status"] != "answered":
        raise RuntimeError(f"message {message_id} ended {record['status']}: {record.get('error')}")
    reply = record["reply"]
    return {
        "completion_tokens": int(reply["completion_tokens"]),
        "seconds": float(reply["generation_ms"]) / 1000,
        "prompt_tokens": int(reply["prompt_tokens"]),
    }


def median_tok_s(runs: Sequence[dict[str, Any]]) -> float:
    """Median of per-call tokens/s: robust to a call stalled by something else on the machine."""
    rates = [r["completion_tokens"] / r["seconds"] for r in runs if r["seconds"] > 0 and r["completion_tokens"]]
    return statistics.median(rates) if rates else float("nan")


def total_tok_s(runs: Sequence[dict[str, Any]]) -> float:
    seconds = sum(r["seconds"] for r in runs)
    return sum(r["completion_tokens"] for r in runs) / seconds if seconds else float("nan")


def mean_tokens(runs: Sequence[dict[str, Any]]) -> float:
    return statistics.fmean(r["completion_tokens"] for r in runs)


class CpuHog:
    """A busy-loop process: one of the two cores taken by something else."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.2)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --------------------------------------------------------------------------- orchestration
@dataclass(frozen=True)
class ModelPlan:
    label: str
    shape: str
    max_tokens: int
    runs: int
    busy_max_tokens: int
    variants: tuple[tuple[str, int], ...]  # (backend, threads)


@dataclass(frozen=True)
class Plan:
    quick: bool
    rounds: int
    pingpong_n: int
    celery_n: int
    http_n: int
    pipeline_n: int
    one_user_n: int
    models: tuple[ModelPlan, ...]
    busy_runs: int

    @classmethod
    def make(cls, quick: bool) -> Plan:
        both = (("llama_cpp", 2), ("ctransformers", 2))
        # ctransformers at 1 thread too: at 2 threads it is bimodal on the tiny model (see docs/benchmarks.md).
        tiny_variants = (*both, ("ctransformers", 1))
        if quick:
            return cls(True, 3, 1200, 300, 150, 120, 45, (ModelPlan("tiny", "tiny", 128, 8, 32, tiny_variants),), 1)
        tiny = ModelPlan("tiny", "tiny", 128, 16, 32, tiny_variants)
        tinyllama = ModelPlan("TinyLlama-1.1B Q4_0", "tinyllama-1.1b", 64, 6, 16, both)
        return cls(False, 5, 3000, 1000, 400, 400, 150, (tiny, tinyllama), 2)


def model_file(shape: str, tmp: Path) -> Path:
    from core_worker.tiny_model import write_tiny_model

    if shape == "tiny":
        path = tmp / "tiny.gguf"
        return path if path.exists() else write_tiny_model(path)
    path = CACHE / f"{shape}-q4_0.gguf"
    if not path.exists():
        started = time.perf_counter()
        print(f"  writing {path} (~600 MB, once) ...", flush=True)
        write_tiny_model(path, shape=shape, quant="q4_0")
        print(f"  written in {time.perf_counter() - started:.1f}s", flush=True)
    return path


def interleave(rounds: int, steps: Sequence[tuple[Callable[..., None], int]]) -> None:
    """Run each measurement in ``rounds`` slices, round robin, so slow spells of the machine hit all alike."""
    for r in range(rounds):
        for measure, n in steps:
            share = n // rounds + (1 if r < n % rounds else 0)
            measure(share)


def run_latency(plan: Plan, redis_url: str, secret: str, env: dict[str, str], tmp: Path, run_id: str) -> dict[str, Any]:
    from tests.integration.harness import CallbackReceiver

    print("== 1. pipeline overhead (echo backend) ==", flush=True)
    receiver = CallbackReceiver(secret)
    arrivals = ArrivalList()
    receiver.received = arrivals
    pingpong = PingPong(redis_url)
    bare = BareCelery(env, tmp)
    http = BareHttp(secret, receiver.url)
    try:
        with running_system(env, tmp) as system:
            system.start_edge()
            system.start_worker("core", "core")
            system.start_worker("io", "deliver", pool="threads", concurrency=4)
            many = PipelineSender(system.base_url, receiver.url, arrivals, one_user=False, run_id=run_id)
            one = PipelineSender(system.base_url, receiver.url, arrivals, one_user=True, run_id=run_id)
            # Warm-up: connections, the first request of each gunicorn worker, Celery's producer pools.
            pingpong.measure(200, record=False)
            bare.measure(50, record=False)
            http.measure(20, record=False)
            many.measure(30, record=False)
            one.measure(5, record=False)
            interleave(
                plan.rounds,
                [(pingpong.measure, plan.pingpong_n), (bare.measure, plan.celery_n), (http.measure, plan.http_n),
                 (many.measure, plan.pipeline_n), (one.measure, plan.one_user_n)],
            )
            many.close()
            one.close()
    finally:
        pingpong.close()
        bare.close()
        receiver.close()
    out = {
        "redis_pingpong": pingpong.latency.summary(),
        "bare_celery": bare.latency.summary(),
        "bare_http": http.latency.summary(),
        "pipeline": many.total.summary(),
        "post_202": many.accepted.summary(),
        "to_reply": many.to_reply.summary(),
        "to_callback": many.to_callback.summary(),
        "pipeline_one_user": one.total.summary(),
    }
    for key in ("redis_pingpong", "bare_celery", "bare_http", "pipeline", "pipeline_one_user"):
        print(f"  {out[key]['name']}: p50 {out[key]['p50_ms']:.2f} ms, p99 {out[key]['p99_ms']:.2f} ms", flush=True)
    return out


def run_models(plan: Plan, env: dict[str, str], tmp: Path, run_id: str) -> tuple[list[dict[str, Any]], list[Any]]:
    print("== 2. model speed: the library directly vs through the worker ==", flush=True)
    speed: list[dict[str, Any]] = []
    busy: list[dict[str, Any]] = []
    with running_system(env, tmp) as system:
        system.start_edge()
        for mp in plan.models:
            path = model_file(mp.shape, tmp)
            for backend, threads in mp.variants:
                direct = DirectRunner(backend, path, mp.max_tokens, threads=threads)  # loads while no worker exists
                try:
                    tag = f"{run_id}-{mp.shape}-{backend}-{threads}"
                    row = compare(system, direct, mp, backend, threads, path, tag)
                    if threads == MODEL_THREADS:  # 3. the same library with a busy core (no worker running now)
                        busy.append(measure_busy(direct, backend, mp, path, plan.busy_runs))
                finally:
                    direct.close()
                speed.append(row)
                print(
                    f"  {mp.label} {backend} {threads} thread(s): direct {row['direct_tok_s']:.1f} tok/s, "
                    f"worker {row['worker_tok_s']:.1f} tok/s (x{row['ratio']:.2f})", flush=True,
                )
    return speed, busy


def compare(
    system: Any, direct: DirectRunner, mp: ModelPlan, backend: str, threads: int, path: Path, tag: str
) -> dict[str, Any]:
    """Start a core worker on the model, then alternate direct calls and messages (ABBA)."""
    name = f"core-{tag}"
    system.env.update(
        LLM_BACKEND=backend, MODEL_PATH=str(path), LLM_MAX_TOKENS=str(mp.max_tokens), LLM_THREADS=str(threads)
    )
    direct_runs: list[dict[str, Any]] = []
    worker_runs: list[dict[str, Any]] = []
    system.start_worker(name, "core")
    try:
        for i in range(2):
            worker_message(system, f"warm-{tag}-{i}")
        for i in range(mp.runs):
            for side in ("direct", "worker") if i % 2 == 0 else ("worker", "direct"):
                time.sleep(SETTLE_SECONDS)  # let the edge and the worker finish the last message
                if side == "direct":
                    direct_runs.append(direct.generate(mp.max_tokens))
                else:
                    worker_runs.append(worker_message(system, f"m-{tag}-{i}"))
    finally:
        system.procs.pop(name).stop()
    row: dict[str, Any] = {
        "model": mp.label, "backend": backend, "threads": threads, "max_tokens": mp.max_tokens, "runs": mp.runs,
        "prompt_tokens": direct.info["prompt_tokens"], "worker_prompt_tokens": worker_runs[0]["prompt_tokens"],
        "direct_load_s": direct.info["load_s"], "direct_prompt_tok_s": direct.info["prompt_tok_s"],
        "direct_tok_s": median_tok_s(direct_runs), "worker_tok_s": median_tok_s(worker_runs),
        "direct_total_tok_s": total_tok_s(direct_runs), "worker_total_tok_s": total_tok_s(worker_runs),
        "direct_mean_tokens": mean_tokens(direct_runs), "worker_mean_tokens": mean_tokens(worker_runs),
        "direct_runs": direct_runs, "worker_runs": worker_runs,
    }
    row["ratio"] = ratio(row["worker_tok_s"], row["direct_tok_s"])
    return row


def measure_busy(direct: DirectRunner, backend: str, mp: ModelPlan, path: Path, runs: int) -> dict[str, Any]:
    """Direct tokens/s at 2 threads and at 1 thread, idle and with one core busy (short replies: it can be slow)."""
    limit = mp.busy_max_tokens
    result: dict[str, Any] = {"model": mp.label, "backend": backend, "max_tokens": limit}
    single = DirectRunner(backend, path, limit, threads=1)
    time.sleep(SETTLE_SECONDS)
    try:
        for label, runner in (("2t", direct), ("1t", single)):
            idle = [runner.generate(limit) for _ in range(runs)]
            hog = CpuHog()
            try:
                loaded = [runner.generate(limit) for _ in range(runs)]
            finally:
                hog.close()
            result[f"idle_{label}_tok_s"] = median_tok_s(idle)
            result[f"busy_{label}_tok_s"] = median_tok_s(loaded)
            result[f"runs_{label}"] = {"idle": idle, "busy": loaded}
    finally:
        single.close()
    result["slowdown_2t"] = ratio(result["idle_2t_tok_s"], result["busy_2t_tok_s"])
    result["slowdown_1t"] = ratio(result["idle_1t_tok_s"], result["busy_1t_tok_s"])
    return result


def run(plan: Plan) -> dict[str, Any]:
    from tasks.signing import new_secret
    from tests.integration.harness import RedisServer

    started = time.monotonic()
    background = busy_fraction(1.0)
    for _ in range(30):  # something else is running: give it up to 30 s to finish
        if background <= 0.1:
            break
        print(f"the machine is {background:.0%} busy; waiting for it to go quiet ...", flush=True)
        background = busy_fraction(1.0)
    else:
        print(f"warning: the machine is {background:.0%} busy before the benchmark starts; figures will be noisy",
              flush=True)
    load_before = os.getloadavg()[0]
    run_id = f"{int(time.time())}"
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    secret = new_secret()
    redis_server = RedisServer(tmp / "redis")
    results: dict[str, Any] = {}
    try:
        env = bench_env(redis_server.url, secret, model_file("tiny", tmp), LLM_BACKEND=ECHO_BACKEND)
        results["latency"] = run_latency(plan, redis_server.url, secret, env, tmp, run_id)
        results["model_speed"], results["busy_core"] = run_models(plan, env, tmp, run_id)
    finally:
        redis_server.stop()
    results["meta"] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": ".venv/bin/python bench/pipeline.py" + (" --quick" if plan.quick else ""),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "versions": _versions(),
        "seconds": round(time.monotonic() - started, 1),
        "busy_before": background,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg()[0],
        "logs": str(tmp),
    }
    return results


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for name in ("celery", "kombu", "redis", "gunicorn", "flask", "llama_cpp_python", "ctransformers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "?"
    return found


# --------------------------------------------------------------------------- report
Rows = tuple[list[str], list[list[Any]]]


def latency_rows(results: dict[str, Any]) -> Rows:
    lat = results["latency"]
    headers = ["measurement", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms"]
    keys = (
        "redis_pingpong", "bare_celery", "bare_http", "pipeline", "post_202", "to_reply", "to_callback",
        "pipeline_one_user",
    )
    rows = [[lat[k]["name"], lat[k]["n"], lat[k]["p50_ms"], lat[k]["p90_ms"], lat[k]["p99_ms"], lat[k]["mean_ms"]]
            for k in keys]
    return headers, rows


def latency_ratio_rows(results: dict[str, Any]) -> Rows:
    lat = results["latency"]
    bare, ping, http = lat["bare_celery"], lat["redis_pingpong"], lat["bare_http"]
    rows: list[list[Any]] = []
    for key, label in (("pipeline", "new user per message"), ("pipeline_one_user", "one user")):
        pipe = lat[key]
        rows.append([f"pipeline ({label}) / bare Celery", ratio(pipe["p50_ms"], bare["p50_ms"]),
                     ratio(pipe["p99_ms"], bare["p99_ms"])])
        rows.append([f"pipeline ({label}) / (2 x bare Celery)", ratio(pipe["p50_ms"], 2 * bare["p50_ms"]),
                     ratio(pipe["p99_ms"], 2 * bare["p99_ms"])])
        rows.append([f"pipeline ({label}) / (2 x bare Celery + 2 x bare HTTP)",
                     ratio(pipe["p50_ms"], 2 * (bare["p50_ms"] + http["p50_ms"])),
                     ratio(pipe["p99_ms"], 2 * (bare["p99_ms"] + http["p99_ms"]))])
    rows.append(["bare Celery / Redis ping-pong", ratio(bare["p50_ms"], ping["p50_ms"]),
                 ratio(bare["p99_ms"], ping["p99_ms"])])
    return ["ratio", "p50", "p99"], rows


def speed_rows(results: dict[str, Any]) -> Rows:
    headers = [
        "model", "backend", "threads", "max tokens", "prompt tokens", "direct prompt tok/s", "direct tok/s",
        "worker tok/s", "worker/direct", "mean tokens direct/worker",
    ]
    rows = [
        [r["model"], r["backend"], r["threads"], r["max_tokens"], r["prompt_tokens"], r["direct_prompt_tok_s"],
         r["direct_tok_s"],
         r["worker_tok_s"], r["ratio"], f"{r['direct_mean_tokens']:.0f}/{r['worker_mean_tokens']:.0f}"]
        for r in results["model_speed"]
    ]
    return headers, rows


def busy_rows(results: dict[str, Any]) -> Rows:
    headers = [
        "model", "backend", "max tokens", "2 threads idle", "2 threads, 1 core busy", "slowdown", "1 thread idle",
        "1 thread, 1 core busy", "slowdown",
    ]
    rows = [
        [b["model"], b["backend"], b["max_tokens"], b["idle_2t_tok_s"], b["busy_2t_tok_s"], b["slowdown_2t"],
         b["idle_1t_tok_s"], b["busy_1t_tok_s"], b["slowdown_1t"]]
        for b in results["busy_core"]
    ]
    return headers, rows


def report(results: dict[str, Any], fmt: str = "text") -> str:
    render = table if fmt == "text" else markdown_table
    meta = results["meta"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    return "\n".join(
        [
            f"{meta['date']}; {meta['cpus']} CPUs ({meta['cpu']}); Python {meta['python']}; {versions}",
            f"machine busy before start: {meta['busy_before']:.0%}; load average before/after "
            f"{meta['loadavg_before']:.2f}/{meta['loadavg_after']:.2f}; took {meta['seconds']}s",
            "",
            "1. Latency, sequential single sender (ms)",
            render(*latency_rows(results)),
            "",
            render(*latency_ratio_rows(results)),
            "",
            "2. Model speed: median tokens/s per call, prompt prefix cached (as in the worker)",
            render(*speed_rows(results)),
            "",
            "3. Direct tokens/s with one of the cores taken by a busy loop",
            render(*busy_rows(results)),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["_pong"]:
        pong_main(*args_in[1:4])
        return 0
    if args_in[:1] == ["_direct"]:
        direct_main(json.loads(args_in[1]), sys.stdin, sys.stdout)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: fewer samples, the tiny model only")
    parser.add_argument("--json", type=Path, help="also write the raw results (every sample) here")
    parser.add_argument("--markdown", action="store_true", help="print the tables as markdown (for docs/benchmarks.md)")
    args = parser.parse_args(args_in)
    results = run(Plan.make(args.quick))
    print()
    print(report(results, "markdown" if args.markdown else "text"))
    print(f"\n(process logs in {results['meta']['logs']})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
