"""Scale: answers/s with 1, 2 and 4 core worker processes, and with a worker on "another machine" (a netns).

``.venv/bin/python bench/scale.py [--quick]`` (about 2 min; --quick ~50 s).  Needs root for ``ip netns``; without
it the network-namespace rows are skipped (and say so).

The edge, an io worker (``deliver``) and N core workers (each its own ``celery`` process on the Procfile's threads
pool with ``LLM_PARALLEL=1``: one conversation at a time, in the worker's one model process; ``LLM_THREADS=1`` so
model processes x threads stays within the cores up to N = 2) serve the tiny model with llama_cpp
and a fixed ``LLM_MAX_TOKENS``, so every answer costs the same.  32 sender threads, a new user per message,
POST with a ``reply_url`` and send the next message when the signed callback arrives; answers/s is counted over
a fixed window after a warm-up (tokens/s: answers/s x the mean completion tokens of the last 20 replies).  The
baseline is the 1-worker figure of the same run.

"Another machine": a network namespace joined to this one by a veth pair, Redis listening on the veth address as
well, and a core worker started inside it with ``REDIS_URL`` pointing at that address, so its every broker and
session call crosses a network interface.  The namespace is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from itertools import count
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from bench.common import (
    BIN,
    Arrivals,
    Proc,
    Run,
    System,
    bench_env,
    markdown_table,
    model_file,
    ratio,
    run_script,
    running_system,
    wait_until,
)

NETNS = "sbbench"
HOST_IF, NS_IF = "sbb-host", "sbb-ns"
HOST_ADDR, NS_ADDR = "10.231.77.1", "10.231.77.2"
SENDERS = 32
MAX_TOKENS = 256  # model time (~50 ms at 1 thread) dominates the pipeline's own CPU (~10 ms per message)
PARALLEL = 1  # LLM_PARALLEL of each core worker: one conversation at a time, so the workers are what scales


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


def remove_netns() -> None:
    """Remove the namespace and the host end of the veth pair, whatever is left of them."""
    _ip("netns", "del", NETNS, check=False)
    _ip("link", "del", HOST_IF, check=False)


@contextlib.contextmanager
def network_namespace() -> Iterator[bool]:
    """A netns joined by a veth pair (host HOST_ADDR, namespace NS_ADDR); yields False if it cannot be made."""
    remove_netns()  # a run killed with SIGKILL may have left one
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally below on `kill`
    try:
        try:
            _ip("netns", "add", NETNS)
            _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
            _ip("link", "set", NS_IF, "netns", NETNS)
            _ip("addr", "add", f"{HOST_ADDR}/24", "dev", HOST_IF)
            _ip("link", "set", HOST_IF, "up")
            _ip("netns", "exec", NETNS, "ip", "addr", "add", f"{NS_ADDR}/24", "dev", NS_IF)
            _ip("netns", "exec", NETNS, "ip", "link", "set", NS_IF, "up")
            _ip("netns", "exec", NETNS, "ip", "link", "set", "lo", "up")
            made = True
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            print(f"  no network namespace ({exc}); skipping the 'another machine' rows", flush=True)
            made = False
        yield made
    finally:
        remove_netns()
        signal.signal(signal.SIGTERM, previous)


class Redis:
    """redis-server as the harness starts it, listening on loopback and (if given) the veth address too."""

    def __init__(self, run: Run, extra_bind: str | None) -> None:
        from operator_tools.embedded_redis import redis_server_command
        from tests.support.harness import free_port

        self.port = free_port()
        argv = redis_server_command(self.port, run.tmp / "redis")
        if extra_bind:
            argv += ["--bind", "127.0.0.1", extra_bind, "--protected-mode", "no"]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = Proc("redis", argv, dict(os.environ), run.tmp)
        import redis

        wait_until(lambda: bool(redis.Redis.from_url(self.url).ping()), 20, "redis")

    def stop(self) -> None:
        self.proc.stop()


class Senders:
    """Closed-loop senders: each POSTs, waits for its callback, POSTs again; completions are timestamped."""

    def __init__(self, base_url: str, callback_url: str, arrivals: Arrivals, run_id: str) -> None:
        self.base_url, self.callback_url, self.arrivals, self.run_id = base_url, callback_url, arrivals, run_id
        self.done: list[float] = []
        self.ids: list[str] = []
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.sent = count()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(SENDERS)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        from tests.support.factories import AUTH

        session = requests.Session()
        session.headers.update(AUTH)  # the test edge's client key (API_KEYS)
        while not self.stop.is_set():
            n = next(self.sent)
            try:
                body = {"user": f"scale-{self.run_id}-{n}", "text": "Tell me about the sea.",
                        "reply_url": self.callback_url}
                response = session.post(f"{self.base_url}/v1/messages", json=body, timeout=30)
                if response.status_code != 202:
                    raise RuntimeError(f"POST answered {response.status_code}: {response.text[:200]}")
                message_id = response.json()["message_id"]
                self.arrivals.wait_for(message_id, 120)
                self.done.append(time.monotonic())
                self.ids.append(message_id)
            except Exception as exc:  # reported with the results, the run goes on
                self.errors.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.5)

    def rate(self, start: float, end: float) -> float:
        return sum(1 for t in self.done if start <= t < end) / (end - start)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=150)


def core_worker(system: System, name: str, netns: bool, redis_url: str) -> Proc:
    """A core worker as ``System.core_worker`` starts it at ``LLM_PARALLEL=PARALLEL`` (threads pool, that many task
    threads), inside the network namespace when ``netns``."""
    argv = [str(BIN / "celery"), "-A", "core_worker.llm_worker", "worker", "-Q", "core", "--pool", "threads",
            "--concurrency", str(PARALLEL), "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip",
            "--without-mingle"]
    env = {**system.env, "LLM_PARALLEL": str(PARALLEL)}
    if netns:
        argv = ["ip", "netns", "exec", NETNS, *argv]
        env["REDIS_URL"] = redis_url
    proc = system.procs[name] = Proc(name, argv, env, system.log_dir)
    return proc


def measure(system: System, receiver_url: str, arrivals: Arrivals, run: Run, config: dict[str, Any],
            ns_redis_url: str, warm: float, window: float) -> dict[str, Any]:
    names = [f"core-{config['label'].replace(' ', '')}-{i}" for i in range(config["host"] + config["netns"])]
    procs = [core_worker(system, name, i >= config["host"], ns_redis_url) for i, name in enumerate(names)]
    try:
        for proc in procs:
            wait_until(lambda p=proc: " ready." in p.log(), 90, f"worker {proc.name}", interval=0.2)  # type: ignore[misc]
        senders = Senders(system.base_url, receiver_url, arrivals, f"{run.run_id}-{len(names)}-{config['netns']}")
        try:
            time.sleep(warm)
            start = time.monotonic()
            time.sleep(window)
            rate = senders.rate(start, time.monotonic())
        finally:
            senders.close()
        tokens = [system.status(mid)["reply"]["completion_tokens"] for mid in senders.ids[-20:]]
        netns_tasks = sum(p.log().count("succeeded in") for p in procs[config["host"]:])
    finally:
        for name in names:
            system.procs.pop(name).stop()
    result = {**config, "answers_per_s": rate, "mean_tokens": sum(tokens) / len(tokens) if tokens else 0.0,
              "errors": senders.errors[:5], "n_errors": len(senders.errors),
              "netns_tasks": netns_tasks}
    print(f"  {config['label']}: {rate:.1f} answers/s" + (f", {netns_tasks} answered in the netns"
                                                             if config["netns"] else ""), flush=True)
    if senders.errors:
        print(f"  {len(senders.errors)} errors, e.g. {senders.errors[0]}", flush=True)
    return result


def run_bench(run: Run) -> dict[str, Any]:
    from tasks.signing import new_secret
    from tests.support.harness import CallbackReceiver

    warm, window = (3.0, 6.0) if run.quick else (5.0, 15.0)
    configs = [{"label": f"{n} worker{'s' if n > 1 else ''}", "host": n, "netns": 0} for n in (1, 2, 4)]
    rows: list[dict[str, Any]] = []
    secret = new_secret()
    with network_namespace() as have_netns:
        if have_netns:
            configs.insert(2, {"label": "1 worker + 1 in a netns", "host": 1, "netns": 1})
        server = Redis(run, HOST_ADDR if have_netns else None)
        receiver = CallbackReceiver(secret)
        arrivals = Arrivals()
        receiver.received = arrivals
        try:
            env = bench_env(server.url, secret, model_file("tiny", run.tmp), LLM_BACKEND="llama_cpp",
                            LLM_THREADS="1", LLM_MAX_TOKENS=str(MAX_TOKENS))
            with running_system(env, run.tmp) as system:
                system.start_edge()
                system.start_worker("io", "deliver", pool="threads", concurrency=8)
                for config in configs:
                    rows.append(measure(system, receiver.url, arrivals, run, config,
                                        f"redis://{HOST_ADDR}:{server.port}/0", warm, window))
        finally:
            receiver.close()
            server.stop()
    base = rows[0]["answers_per_s"]
    for row in rows:
        row["vs_one"] = ratio(row["answers_per_s"], base)
    return {"rows": rows, "senders": SENDERS, "max_tokens": MAX_TOKENS, "parallel": PARALLEL, "window_s": window,
            "netns": have_netns, "cpus": os.cpu_count()}


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [[r["label"], r["host"] + r["netns"], r["answers_per_s"], r["answers_per_s"] * r["mean_tokens"],
             r["vs_one"], r["netns_tasks"] if r["netns"] else "", r["n_errors"]] for r in results["rows"]]
    title = (f"Answers/s, tiny model, llama_cpp, LLM_PARALLEL={results['parallel']}, LLM_THREADS=1, "
             f"LLM_MAX_TOKENS={results['max_tokens']}, "
             f"{results['senders']} senders, {results['window_s']:g} s window, {results['cpus']} CPUs")
    return [(title, markdown_table(["core workers", "model processes", "answers/s", "tokens/s", "x 1 worker",
                                    "answered in the netns", "errors"], rows))]


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("scale", __doc__, argv, run_bench, tables)


if __name__ == "__main__":
    sys.exit(main())
