"""What every benchmark script shares: statistics, tables, the machine, processes, results on disk.

Each script in ``bench/`` measures one thing next to a baseline measured in the
same run, prints its tables and writes ``bench/results/<name>.json`` (read by
``bench/plots.py``).  Processes are started through
``tests/support/harness.py`` so they run exactly as the integration tests
run them: real redis-server, gunicorn with ``edge.gunicorn_conf``, Celery
workers from the Procfile's entry modules.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `bench`, `tests` and the product importable
    sys.path.insert(0, str(ROOT))

from tests.support.harness import Proc, RedisServer, System, wait_until  # noqa: E402

BIN = Path(sys.executable).parent
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"
ECHO_BACKEND = "bench.echo_backend:factory"
MODEL_CONTEXT = 2048
def python_path() -> str:
    """PYTHONPATH for the processes a benchmark starts: the repository first."""
    return os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH", "")])])


def llama_cpp_build() -> str:
    # The Makefile builds llama.cpp for the machine minus AMX (NO_AMX): AMX kernels crashed every quantized
    # model on a VM that reports AMX without enabling it (docs/benchmarks.md, Findings).
    return "the virtualenv's (native, no AMX)"

__all__ = [
    "BIN", "CACHE", "ECHO_BACKEND", "RESULTS", "ROOT", "Arrivals", "Latency", "Proc", "RedisServer", "Run", "System",
    "bench_env", "cpu_busy", "fmt", "markdown_table", "model_file", "parse_args", "percentile", "python_path", "ratio",
    "running_system", "smaps_rollup", "wait_idle", "wait_until",
]


# --------------------------------------------------------------------------- statistics
def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


@dataclass
class Latency:
    """Samples in milliseconds of one measured thing, summarised as percentiles."""

    name: str
    samples_ms: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0  # wall time of the measured batches: len(samples) / wall_seconds = completions/s
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, ms: float) -> None:
        with self.lock:
            self.samples_ms.append(ms)

    def summary(self) -> dict[str, Any]:
        s = self.samples_ms
        return {
            "name": self.name, "n": len(s), "p50_ms": percentile(s, 50), "p90_ms": percentile(s, 90),
            "p99_ms": percentile(s, 99), "mean_ms": statistics.fmean(s) if s else float("nan"),
            "max_ms": max(s) if s else float("nan"),
            "per_s": len(s) / self.wall_seconds if self.wall_seconds else float("nan"),
        }


# --------------------------------------------------------------------------- tables
def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table (also what the scripts print: it reads fine as text)."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- the machine
def cpu_busy(seconds: float) -> float:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values), values[3] + (values[4] if len(values) > 4 else 0)

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    total = total1 - total0
    return 1 - (idle1 - idle0) / total if total else float("nan")


def wait_idle(max_wait: float = 15, threshold: float = 0.15) -> float:
    """Wait up to ``max_wait`` s for the machine to go quiet; the last busy share seen (reported with results)."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy(1.0)
    while busy > threshold and time.monotonic() < deadline:
        print(f"  the machine is {busy:.0%} busy; waiting for it to go quiet ...", flush=True)
        busy = cpu_busy(1.0)
    if busy > threshold:
        print(f"  warning: the machine is {busy:.0%} busy; figures will be noisy", flush=True)
    return busy


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
    for name in ("celery", "kombu", "redis", "gunicorn", "flask", "llama_cpp_python", "ctransformers", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "?"
    return found


def machine() -> dict[str, Any]:
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    return {"cpus": os.cpu_count(), "cpu": _cpu_model(), "mem_gib": round(int(mem) / 2**20, 1),
            "python": platform.python_version(), "versions": _versions()}


def smaps_rollup(pid: int) -> dict[str, int]:
    """Rss, Pss and Uss (private clean + dirty) of a process in bytes, from /proc/<pid>/smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0]) * 1024
    return {"rss": fields.get("Rss", 0), "pss": fields.get("Pss", 0),
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


# --------------------------------------------------------------------------- one benchmark run
def parse_args(doc: str | None, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast check: fewer samples, shorter runs")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for an idle machine first")
    return parser.parse_args(argv)


class Run:
    """One script's run: an idle-machine wait, a scratch dir for logs, the busy share while it ran, its JSON."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name, self.quick = name, bool(args.quick)
        print(f"== bench/{name}.py{' --quick' if self.quick else ''} ==", flush=True)
        self.busy_before = float("nan") if args.no_wait else wait_idle()
        self.load_before = os.getloadavg()[0]
        self.started = time.monotonic()
        self._cpu0 = _cpu_times()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"switchboard-bench-{name}-"))
        self.run_id = str(int(time.time()))

    def finish(self, results: dict[str, Any], tables: Sequence[tuple[str, str]]) -> Path:
        """Print the tables and write ``bench/results/<name>.json``."""
        meta = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": f"bench/{self.name}.py" + (" --quick" if self.quick else ""),
            "quick": self.quick, "seconds": round(time.monotonic() - self.started, 1),
            "busy_before": self.busy_before, "loadavg_before": self.load_before,
            "loadavg_after": os.getloadavg()[0], "busy_during": _busy_since(self._cpu0),
            "logs": str(self.tmp), "llama_cpp_build": llama_cpp_build(), **machine(),
        }
        out = {"meta": meta, **results, "tables": [{"title": t, "markdown": m} for t, m in tables]}
        print(f"\n{meta['date']}, took {meta['seconds']} s; machine busy before {meta['busy_before']:.0%}, "
              f"all CPUs busy during the run {meta['busy_during']:.0%} (ours included); logs in {self.tmp}\n")
        for title, markdown in tables:
            print(f"### {title}\n\n{markdown}\n", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps(out, indent=1, default=str))
        print(f"(written {path.relative_to(ROOT)})")
        return path


def run_script(name: str, doc: str | None, argv: Sequence[str] | None,
               bench: Callable[[Run], dict[str, Any]],
               tables: Callable[[dict[str, Any]], Sequence[tuple[str, str]]]) -> int:
    """A benchmark script's ``main``: parse the common flags, run, write the JSON and print the tables."""
    run = Run(name, parse_args(doc, argv))
    results = bench(run)
    run.finish(results, tables(results))
    return 0


def _cpu_times() -> tuple[int, int]:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values), values[3] + (values[4] if len(values) > 4 else 0)


def _busy_since(start: tuple[int, int]) -> float:
    total, idle = _cpu_times()
    return 1 - (idle - start[1]) / (total - start[0]) if total > start[0] else float("nan")


# --------------------------------------------------------------------------- processes
def bench_env(redis_url: str, secret: str, model: Path, **overrides: str) -> dict[str, str]:
    """The integration tests' environment with production time limits and the product's edge shape.

    ``system_env`` sets ``EDGE_WORKERS=1``/``EDGE_THREADS=8`` for tests; the benchmarks use the product's
    defaults (``edge/gunicorn_conf.py``) unless a script overrides them.
    """
    from tests.support.harness import system_env

    env = system_env(redis_url, secret, model)
    env.pop("EDGE_WORKERS", None)
    env.pop("EDGE_THREADS", None)
    env.update(
        {
            "PYTHONPATH": python_path(),
            "VISIBILITY_TIMEOUT": "600", "TASK_SOFT_TIME_LIMIT": "240", "TASK_TIME_LIMIT": "300",
            "SESSION_LOCK_SECONDS": "15", "SESSION_RETRY_SECONDS": "0.5", "UNACKED_RESTORE_INTERVAL": "10",
            "LLM_CONTEXT": str(MODEL_CONTEXT), "REDIS_SOCKET_TIMEOUT": "10",
        }
    )
    env.update(overrides)
    return env


@contextmanager
def running_system(env: dict[str, str], log_dir: Path) -> Iterator[System]:
    """A harness System that is always stopped; on failure the processes' log tails go to stderr."""
    system = System(env, log_dir)
    try:
        yield system
    except BaseException:
        print(f"\nprocess logs in {log_dir}; their tails:\n{system.logs()}", file=sys.stderr)
        raise
    finally:
        system.stop()


@contextmanager
def redis_server(log_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(log_dir / "redis")
    try:
        yield server
    finally:
        server.stop()


def model_file(shape: str, tmp: Path) -> Path:
    """The tiny test model (in ``tmp``) or a cached bigger shape (``bench/.cache``, written once)."""
    from core_worker.tiny_model import write_tiny_model

    if shape == "tiny":
        path = tmp / "tiny.gguf"
        return path if path.exists() else write_tiny_model(path)
    path = CACHE / f"{shape}-q4_0.gguf"
    if not path.exists():
        started = time.perf_counter()
        print(f"  writing {path} (~600 MB, once) ...", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        write_tiny_model(path, shape=shape, quant="q4_0")
        print(f"  written in {time.perf_counter() - started:.1f}s", flush=True)
    return path


class Arrivals(list[Any]):
    """Stands in for CallbackReceiver.received: wakes the waiter of a message on its callback (no polling)."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.by_id: dict[str, Any] = {}
        self.arrived = 0

    def append(self, callback: Any) -> None:  # keeps nothing in the list itself: waiters pop by id
        with self.cond:
            self.by_id[callback.webhook_id] = callback
            self.arrived += 1
            self.cond.notify_all()

    def wait_for(self, message_id: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while message_id not in self.by_id:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no callback for {message_id} within {timeout:.0f}s")
                self.cond.wait(left)
            return self.by_id.pop(message_id)
