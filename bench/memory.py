"""Memory: RSS, PSS and USS of the core worker and its model process against the model file, echo backend as baseline.

``.venv/bin/python bench/memory.py [--quick]`` (about 1 min; --quick, llama_cpp only, ~30 s).

A core worker runs as the Procfile runs it (threads pool; the model in a child process of the worker,
``core_worker/llm/model_process.py``) with ``LLM_PARALLEL=1`` and ``LLM_THREADS=1``, on the TinyLlama-1.1B-shaped
Q4_0 model, for each backend; the baseline is the same worker with the zero-cost echo backend (Python, Celery and
our code, no model).  After two messages posted together are answered (so the model has generated and holds its
KV cache), each process of the worker is read from ``/proc/<pid>/smaps_rollup``: RSS, PSS (shared pages split
between the sharers) and USS (private pages).  The processes: the worker itself (the "parent": Celery and its task
threads), the model process (the worker's child that is not multiprocessing's resource tracker) and the resource
tracker when there is one.

One conversation (``LLM_PARALLEL=1``) holds one KV cache, so the target is the weights plus the library; what
more conversations add (the model process's RSS at ``LLM_PARALLEL`` 1 vs 4) is ``bench/concurrency.py``'s.

Targets: the model process's RSS <= model file + 150 MiB; the worker process does not load the model (its RSS
stays at the echo worker's), so the weights are in memory once, in the model process.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from bench.common import (
    ECHO_BACKEND,
    Run,
    System,
    bench_env,
    markdown_table,
    model_file,
    redis_server,
    run_script,
    running_system,
    smaps_rollup,
    wait_until,
)

MIB = 2**20
TARGET_OVERHEAD = 150 * MIB
PARALLEL = 1  # LLM_PARALLEL: one conversation, one KV cache (bench/concurrency.py compares 1 with 4)
MESSAGES = 2  # posted together; the second waits for the first's task thread


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/*/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def is_resource_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker (``from multiprocessing.resource_tracker import main; main(..)``)."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def worker_processes(worker: int) -> list[tuple[str, int]]:
    """``(role, pid)`` of the worker, its model process and the resource tracker (if there is one)."""
    kids = children(worker)
    models = [pid for pid in kids if not is_resource_tracker(pid)]
    if len(models) != 1:
        raise RuntimeError(f"expected one model process under the worker {worker}, found {models}")
    return [("worker", worker), ("model process", models[0]),
            *(("resource tracker", pid) for pid in kids if pid != models[0])]


def answer_at_once(system: System, tag: str, n: int) -> None:
    """``n`` messages from ``n`` new users posted together; wait until all are answered."""
    errors: list[str] = []

    def one(i: int) -> None:
        try:
            response = system.post(user=f"mem-{tag}-{i}", text="Tell me about the sea.")
            message_id = response.json()["message_id"]
            record = system.status(message_id, wait=30)
            deadline = time.monotonic() + 120
            while record["status"] not in ("answered", "failed") and time.monotonic() < deadline:
                record = system.status(message_id, wait=30)
            if record["status"] != "answered":
                errors.append(f"{record['status']}: {record.get('error')}")
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"messages not answered: {errors}")


def settled(worker: int, timeout: float = 120) -> list[tuple[str, int]]:
    """The worker's processes once its model process exists and their RSS has stopped growing."""
    wait_until(lambda: bool(worker_processes(worker)), timeout, "the model process")
    last: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = [smaps_rollup(pid)["rss"] for _, pid in worker_processes(worker)]
        if last and len(now) == len(last) and all(abs(a - b) < MIB for a, b in zip(now, last, strict=True)):
            break
        last = now
        time.sleep(1.0)
    return worker_processes(worker)


def measure(system: System, label: str, backend: str, path: Path, tag: str) -> dict[str, Any]:
    name = f"core-mem-{tag}"
    system.env.update(LLM_BACKEND=backend, MODEL_PATH=str(path), LLM_THREADS="1", LLM_MAX_TOKENS="16",
                      LLM_PARALLEL=str(PARALLEL))
    # as System.core_worker starts it (the Procfile's threads pool, LLM_PARALLEL task threads), waited for
    proc = system.start_worker(name, "core", pool="threads", concurrency=PARALLEL)
    try:
        assert proc.popen is not None
        worker = proc.popen.pid
        settled(worker)
        answer_at_once(system, tag, MESSAGES)
        processes = [{"role": role, "pid": pid, **smaps_rollup(pid)} for role, pid in settled(worker)]
    finally:
        system.procs.pop(name).stop()
    return {"label": label, "backend": backend, "model": path.name, "model_bytes": path.stat().st_size,
            "processes": processes}


def _model(row: dict[str, Any]) -> dict[str, Any]:
    return next(p for p in row["processes"] if p["role"] == "model process")


def run_bench(run: Run) -> dict[str, Any]:
    from tasks.signing import new_secret

    backends = ("llama_cpp",) if run.quick else ("llama_cpp", "ctransformers")
    big = model_file("tinyllama-1.1b", run.tmp)
    rows = []
    failures: list[dict[str, str]] = []
    with redis_server(run.tmp) as server:
        env = bench_env(server.url, new_secret(), model_file("tiny", run.tmp))
        with running_system(env, run.tmp) as system:
            system.start_edge()
            rows.append(measure(system, "echo backend (no model)", ECHO_BACKEND, big, f"{run.run_id}-echo"))
            for backend in backends:
                label = f"TinyLlama-1.1B Q4_0, {backend}"
                try:
                    rows.append(measure(system, label, backend, big, f"{run.run_id}-{backend}"))
                except (RuntimeError, TimeoutError) as exc:  # a crashing backend is a result too; go on
                    print(f"  {backend}: FAILED: {exc}", flush=True)
                    failures.append({"label": label, "backend": backend, "error": str(exc)[:500]})
                    continue
                print(f"  {backend}: " + ", ".join(f"{p['role']} RSS {p['rss'] / MIB:.0f} MiB"
                                                   for p in rows[-1]["processes"]), flush=True)
    # The keys are kept from the runs with one model per pool child (bench/results/memory.json may still hold
    # one): the "parent" is the worker process, the "child" its model process.
    baseline = rows[0]
    base_parent = baseline["processes"][0]["rss"]
    base_child = _model(baseline)["rss"]
    for row in rows[1:]:
        parent, model = row["processes"][0], _model(row)
        row["parent_extra"] = parent["rss"] - base_parent
        row["child_overhead"] = [model["rss"] - row["model_bytes"]]
        row["child_extra_over_baseline"] = [model["rss"] - base_child]
        row["children_within_target"] = row["child_overhead"][0] < TARGET_OVERHEAD
        # The worker never loaded the model, and its model process holds no more than one copy of it.
        row["parent_without_model"] = parent["rss"] < base_parent + row["model_bytes"] / 4
        row["one_copy_per_child"] = model["uss"] < 1.5 * row["model_bytes"] + TARGET_OVERHEAD
    return {"rows": rows, "failures": failures, "parallel": PARALLEL, "messages": MESSAGES,
            "target_overhead_bytes": TARGET_OVERHEAD}


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    procs: list[list[Any]] = []
    for row in results["rows"]:
        echo = row["backend"] == ECHO_BACKEND
        for p in row["processes"]:
            over = p["rss"] - row["model_bytes"] if not echo and p["role"] == "model process" else None
            procs.append([row["label"], p["role"], p["rss"] / MIB, p["pss"] / MIB, p["uss"] / MIB,
                          "" if echo else row["model_bytes"] / MIB, "" if over is None else over / MIB])
    checks: list[list[Any]] = [
        [row["label"], row["parent_extra"] / MIB, row["child_overhead"][0] / MIB,
         (row["child_extra_over_baseline"][0] - row["model_bytes"]) / MIB, row["children_within_target"],
         row["parent_without_model"], row["one_copy_per_child"]] for row in results["rows"][1:]]
    checks += [[f"{f['label']}: FAILED ({f['error'][:120]})", "", "", "", "no", "", ""] for f in results["failures"]]
    return [
        (f"Core worker memory: the worker process and its model process, LLM_PARALLEL={results['parallel']}, "
         f"LLM_THREADS=1 (MiB)",
         markdown_table(["worker", "process", "RSS", "PSS", "USS", "model file", "RSS - model"], procs)),
        ("Targets: model process RSS <= model + 150 MiB; worker process without the model; one copy of the weights",
         markdown_table(["worker", "worker process RSS over the echo worker's", "model process RSS - model",
                         "of which the library beyond the weights (model process - echo model process - model)",
                         "model process <= model + 150", "worker without model", "one copy"], checks)),
    ]

def main(argv: Sequence[str] | None = None) -> int:
    return run_script("memory", __doc__, argv, run_bench, tables)


if __name__ == "__main__":
    sys.exit(main())
