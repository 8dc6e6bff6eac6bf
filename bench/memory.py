"""Memory: RSS, PSS and USS of each core worker process against the model file, with the echo backend as baseline.

``.venv/bin/python bench/memory.py [--quick]`` (about 1 min; --quick, llama_cpp only, ~30 s).

A core worker runs as the Procfile runs it (prefork) but with concurrency 2 and ``LLM_THREADS=1``, on the
TinyLlama-1.1B-shaped Q4_0 model, for each backend; the baseline is the same worker with the zero-cost echo
backend (Python, Celery and our code, no model).  After two messages answered at once (so both children have
generated and hold their KV cache), every process of the worker is read from ``/proc/<pid>/smaps_rollup``:
RSS, PSS (shared pages split between the sharers) and USS (private pages).

Targets: each child's RSS <= model file + 150 MiB; the parent does not load the model (its RSS stays at the
baseline parent's), so no child inherits a copy on top of its own.
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
CONCURRENCY = 2


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


def settled_children(parent: int, timeout: float = 120) -> list[int]:
    """The pool's children once there are ``CONCURRENCY`` of them and their RSS has stopped growing."""
    wait_until(lambda: len(children(parent)) >= CONCURRENCY, timeout, "the pool's children")
    last: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = [smaps_rollup(pid)["rss"] for pid in children(parent)]
        if last and len(now) == len(last) and all(abs(a - b) < MIB for a, b in zip(now, last, strict=True)):
            break
        last = now
        time.sleep(1.0)
    return children(parent)


def measure(system: System, label: str, backend: str, path: Path, tag: str) -> dict[str, Any]:
    name = f"core-mem-{tag}"
    system.env.update(LLM_BACKEND=backend, MODEL_PATH=str(path), LLM_THREADS="1", LLM_MAX_TOKENS="16")
    proc = system.start_worker(name, "core", concurrency=CONCURRENCY)
    try:
        assert proc.popen is not None
        parent = proc.popen.pid
        settled_children(parent)
        answer_at_once(system, tag, 2 * CONCURRENCY)
        kids = settled_children(parent)
        processes = [{"role": "parent", "pid": parent, **smaps_rollup(parent)}]
        processes += [{"role": f"child {i + 1}", "pid": pid, **smaps_rollup(pid)} for i, pid in enumerate(kids)]
    finally:
        system.procs.pop(name).stop()
    return {"label": label, "backend": backend, "model": path.name, "model_bytes": path.stat().st_size,
            "processes": processes}


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
    baseline = rows[0]
    base_parent = baseline["processes"][0]["rss"]
    base_child = max(p["rss"] for p in baseline["processes"][1:])
    for row in rows[1:]:
        parent, kids = row["processes"][0], row["processes"][1:]
        row["parent_extra"] = parent["rss"] - base_parent
        row["child_overhead"] = [p["rss"] - row["model_bytes"] for p in kids]
        row["child_extra_over_baseline"] = [p["rss"] - base_child for p in kids]
        row["children_within_target"] = all(o < TARGET_OVERHEAD for o in row["child_overhead"])
        # The parent never loaded the model, and no child holds more than one copy of it.
        row["parent_without_model"] = parent["rss"] < base_parent + row["model_bytes"] / 4
        row["one_copy_per_child"] = all(p["uss"] < 1.5 * row["model_bytes"] + TARGET_OVERHEAD for p in kids)
    return {"rows": rows, "failures": failures, "concurrency": CONCURRENCY, "target_overhead_bytes": TARGET_OVERHEAD}


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    procs: list[list[Any]] = []
    for row in results["rows"]:
        for p in row["processes"]:
            over = p["rss"] - row["model_bytes"] if row["backend"] != ECHO_BACKEND and p["role"] != "parent" else None
            procs.append([row["label"], p["role"], p["rss"] / MIB, p["pss"] / MIB, p["uss"] / MIB,
                          "" if row["backend"] == ECHO_BACKEND else row["model_bytes"] / MIB,
                          "" if over is None else over / MIB])
    checks: list[list[Any]] = [
        [row["label"], row["parent_extra"] / MIB, max(row["child_overhead"]) / MIB,
         (max(row["child_extra_over_baseline"]) - row["model_bytes"]) / MIB, row["children_within_target"],
         row["parent_without_model"], row["one_copy_per_child"]] for row in results["rows"][1:]]
    checks += [[f"{f['label']}: FAILED ({f['error'][:120]})", "", "", "", "no", "", ""] for f in results["failures"]]
    return [
        (f"Core worker memory, prefork concurrency {results['concurrency']}, LLM_THREADS=1 (MiB)",
         markdown_table(["worker", "process", "RSS", "PSS", "USS", "model file", "RSS - model"], procs)),
        ("Targets: child RSS <= model + 150 MiB; parent without the model; one copy per child",
         markdown_table(["worker", "parent RSS over echo parent", "worst child RSS - model",
                         "of which the library beyond the weights (child - echo child - model)", "child <= model + 150",
                         "parent without model", "one copy per child"], checks)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("memory", __doc__, argv, run_bench, tables)


if __name__ == "__main__":
    sys.exit(main())
