"""Model speed: prompt and generated tokens/s through the worker vs the library directly vs the bandwidth ceiling.

``.venv/bin/python bench/model_speed.py [--quick]`` (about 3 min; --quick, tiny model only, ~40 s).  The
TinyLlama-1.1B-shaped random Q4_0 model (~640 MB) is written to ``bench/.cache`` on first use.

For each model and backend (llama_cpp, ctransformers; the tiny model at 1 thread, TinyLlama at 2), in one run:

* direct: ``bench/direct_model.py``, the library loaded by hand with our backends' load arguments, in a child
  (llama_cpp: ``Llama`` with one sequence, where the worker's backend runs a batch engine of ``LLM_PARALLEL``);
* worker: a real core worker behind the edge, as the Procfile runs it (threads pool, ``LLM_PARALLEL`` task threads:
  the default, 4 for llama_cpp and 1 for ctransformers; the model in a child process of the worker), one message
  at a time; ``completion_tokens / generation_ms`` and ``prompt_tokens / generation_ms`` of the stored replies
  (``GET /v1/messages/<id>?wait=``);
* ceiling (TinyLlama only: the tiny model's 2 MiB of weights live in the CPU caches): this machine's memory
  read bandwidth (``bench/bandwidth.py``, 1 and 2 processes) divided by the weight bytes one token reads.

Direct calls and messages alternate (ABBA) so both models are loaded but never compute at once.  Generation
runs on a new person's first message, a different text each time on both sides, so only the system prompt is
cached on either (the worker reuses no person's cached text for another).  Prompt speed comes
from 1-token replies (a worker started with ``LLM_MAX_TOKENS=1``) to texts that differ from their first word, so
on both sides only the system-prompt prefix is cached (on the tiny model the text is 8 times longer,
~370 tokens).  Targets: worker >= 95% of direct.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from bench.common import (
    MODEL_CONTEXT,
    Run,
    System,
    bench_env,
    markdown_table,
    model_file,
    ratio,
    redis_server,
    run_script,
    running_system,
)
from bench.direct_model import DirectRunner

PROMPT_TEXT = "Tell me a long story about the weather, the sea and the people of a small town."
TARGET = 0.95
IN_CACHE_BYTES = 64 * 2**20  # weights this small stay in the CPU caches: memory bandwidth is no ceiling
BUDGET, BUDGET_QUICK = 100.0, 40.0  # seconds of alternating calls per case (both phases), once 2 pairs are done
SETTLE_SECONDS = 0.2  # the worker still acks and pops after the reply is visible; let it finish first


@dataclass(frozen=True)
class Case:
    label: str
    shape: str
    backend: str
    threads: int
    max_tokens: int
    runs: int
    prompt_repeat: int = 1  # the prompt-phase text is PROMPT_TEXT this many times (tiny: a 2 ms prompt is noise)


def plan(quick: bool) -> list[Case]:
    runs = 4 if quick else 8
    # The tiny model at 1 thread: a token costs ~0.2 ms, and 2 threads spend more than that synchronising
    # (ctransformers starts threads per token), which makes 2-thread figures on a shared machine mere noise.
    cases = [Case("tiny", "tiny", backend, 1, 128, runs, 8) for backend in ("llama_cpp", "ctransformers")]
    if not quick:
        cases += [Case("TinyLlama-1.1B Q4_0", "tinyllama-1.1b", backend, 2, 48, 5)
                  for backend in ("llama_cpp", "ctransformers")]
    return cases


def varied_text(i: int, side: str, repeat: int = 1) -> str:
    """A prompt that differs from every earlier one from its first word, the same length for every i."""
    return f"Question {side}{i:04d}: " + " ".join([PROMPT_TEXT] * repeat)


def worker_message(system: System, user: str, text: str) -> dict[str, Any]:
    """One message from a fresh user (so no history); its reply's token counts and model time."""
    response = system.post(user=user, text=text)
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
    return {"completion_tokens": int(reply["completion_tokens"]), "prompt_tokens": int(reply["prompt_tokens"]),
            "seconds": float(reply["generation_ms"]) / 1000}


def median_rate(runs: Sequence[dict[str, Any]], key: str) -> float:
    """Median of per-call ``key``/s: robust to a call stalled by something else on the machine."""
    rates = [r[key] / r["seconds"] for r in runs if r["seconds"] > 0 and r[key]]
    return statistics.median(rates) if rates else float("nan")


Runs = list[dict[str, Any]]


def alternate(runs: int, direct: Any, worker: Any, deadline: float) -> tuple[Runs, Runs]:
    """ABBA: direct, worker, worker, direct, ... with a pause before each call; after 1 pair, stop at ``deadline``
    (a busy machine can make a 2-thread model 50x slower: the run must still end)."""
    d: Runs = []
    w: Runs = []
    for i in range(runs):
        if i >= 1 and time.monotonic() > deadline:
            print(f"    time budget spent: {i} of {runs} runs per side", flush=True)
            break
        for side in ("direct", "worker") if i % 2 == 0 else ("worker", "direct"):
            time.sleep(SETTLE_SECONDS)
            if side == "direct":
                d.append(direct(i))
            else:
                w.append(worker(i))
    return d, w


def measure(system: System, case: Case, path: Path, tag: str, budget: float) -> dict[str, Any]:
    from tasks.settings import load_settings

    direct = DirectRunner(case.backend, path, threads=case.threads, n_ctx=MODEL_CONTEXT, text=PROMPT_TEXT)
    row: dict[str, Any] = {"model": case.label, "backend": case.backend, "threads": case.threads,
                           "max_tokens": case.max_tokens, "runs": case.runs, "load_s": direct.info["load_s"],
                           "cold_prompt_tok_s": direct.info["cold_prompt_tok_s"]}
    try:
        for phase, limit in (("gen", case.max_tokens), ("prompt", 1)):
            name = f"core-{tag}-{phase}"
            system.env.update(LLM_BACKEND=case.backend, MODEL_PATH=str(path), LLM_MAX_TOKENS=str(limit),
                              LLM_THREADS=str(case.threads))
            row["parallel"] = load_settings(system.env).parallel_conversations
            # as System.core_worker starts it (the Procfile's threads pool, LLM_PARALLEL task threads), waited for
            system.start_worker(name, "core", pool="threads", concurrency=row["parallel"])
            try:
                began = time.monotonic()
                worker_message(system, f"warm-{tag}-{phase}", PROMPT_TEXT)
                direct.generate(PROMPT_TEXT, limit)
                if time.monotonic() - began > budget / 3:  # 2 threads on a busy 2-core machine: 50x slower
                    raise RuntimeError(f"machine too busy: one warm-up message and call took "
                                       f"{time.monotonic() - began:.0f} s")
                if phase == "gen":
                    # A new person's first message on both sides: only the system prompt is cached. (The worker
                    # never reuses one person's cached text for another, so a text repeated across fresh users
                    # would be read again by the worker only, and the library's reuse measured against it.)
                    d, w = alternate(case.runs, lambda i: direct.generate(varied_text(i, "g"), case.max_tokens),
                                     lambda i: worker_message(system, f"{tag}-g{i}", varied_text(i, "h")),
                                     time.monotonic() + budget / 2)
                    row.update(direct_gen_tok_s=median_rate(d, "completion_tokens"),
                               worker_gen_tok_s=median_rate(w, "completion_tokens"),
                               direct_mean_tokens=statistics.fmean(r["completion_tokens"] for r in d),
                               worker_mean_tokens=statistics.fmean(r["completion_tokens"] for r in w),
                               prompt_tokens=d[0]["prompt_tokens"], worker_prompt_tokens=w[0]["prompt_tokens"],
                               gen_runs={"direct": d, "worker": w})
                else:
                    d, w = alternate(case.runs, lambda i: direct.generate(varied_text(i, "d", case.prompt_repeat), 1),
                                     lambda i: worker_message(system, f"{tag}-p{i}",
                                                              varied_text(i, "w", case.prompt_repeat)),
                                     time.monotonic() + budget / 2)
                    row.update(direct_prompt_tok_s=median_rate(d, "prompt_tokens"),
                               worker_prompt_tok_s=median_rate(w, "prompt_tokens"),
                               prompt_runs={"direct": d, "worker": w}, prompt_phase_tokens=d[0]["prompt_tokens"])
            finally:
                system.procs.pop(name).stop()
    finally:
        direct.close()
    row["gen_ratio"] = ratio(row["worker_gen_tok_s"], row["direct_gen_tok_s"])
    row["prompt_ratio"] = ratio(row["worker_prompt_tok_s"], row["direct_prompt_tok_s"])
    return row


def run_bench(run: Run) -> dict[str, Any]:
    from bench.bandwidth import read_bandwidth, weight_bytes_per_token
    from tasks.signing import new_secret

    print("  memory read bandwidth ...", flush=True)
    repeats = 3 if run.quick else 6
    bandwidth = {1: read_bandwidth(1, repeats), 2: read_bandwidth(2, repeats)}
    for n, bw in bandwidth.items():
        print(f"    {n} process(es): {bw['bytes_per_s'] / 1e9:.1f} GB/s ({bw['kernel']})", flush=True)
    rows = []
    failures: list[dict[str, Any]] = []
    models: dict[str, dict[str, int]] = {}
    with redis_server(run.tmp) as server:
        env = bench_env(server.url, new_secret(), model_file("tiny", run.tmp))
        with running_system(env, run.tmp) as system:
            system.start_edge()
            for case in plan(run.quick):
                path = model_file(case.shape, run.tmp)
                weights = models.setdefault(case.label, weight_bytes_per_token(str(path)))
                try:
                    row = measure(system, case, path, f"{run.run_id}-{case.shape}-{case.backend}-{case.threads}",
                                  BUDGET_QUICK if run.quick else BUDGET)
                except (RuntimeError, TimeoutError) as exc:  # a crashing backend is a result too; go on
                    print(f"  {case.label} {case.backend} {case.threads}t: FAILED: {exc}", flush=True)
                    failures.append({"model": case.label, "backend": case.backend, "threads": case.threads,
                                     "error": str(exc)[:500]})
                    continue
                ceiling = bandwidth[min(case.threads, 2)]["bytes_per_s"] / weights["per_token"]
                row.update(bytes_per_token=weights["per_token"], ceiling_tok_s=ceiling,
                           worker_of_ceiling=row["worker_gen_tok_s"] / ceiling,
                           direct_of_ceiling=row["direct_gen_tok_s"] / ceiling)
                rows.append(row)
                print(f"  {case.label} {case.backend} {case.threads}t: generation direct {row['direct_gen_tok_s']:.1f}"
                      f" worker {row['worker_gen_tok_s']:.1f} tok/s (x{row['gen_ratio']:.2f}); prompt direct "
                      f"{row['direct_prompt_tok_s']:.0f} worker {row['worker_prompt_tok_s']:.0f} tok/s "
                      f"(x{row['prompt_ratio']:.2f}); {row['worker_of_ceiling']:.0%} of the ceiling", flush=True)
    return {"rows": rows, "failures": failures, "bandwidth": {str(k): v for k, v in bandwidth.items()},
            "models": models, "target_ratio": TARGET}


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    bw = results["bandwidth"]
    speed = [[r["model"], r["backend"], r["threads"], r["parallel"], r.get("prompt_phase_tokens", r["prompt_tokens"]),
              r["direct_prompt_tok_s"], r["worker_prompt_tok_s"], r["prompt_ratio"], r["max_tokens"],
              r["direct_gen_tok_s"], r["worker_gen_tok_s"], r["gen_ratio"],
              min(r["gen_ratio"], r["prompt_ratio"]) >= results["target_ratio"]] for r in results["rows"]]
    speed += [[f["model"], f["backend"], f["threads"], "", f"FAILED: {f['error'][:100]}", "", "", "", "", "", "",
               "", "no"] for f in results.get("failures", [])]
    ceiling = [[r["model"], r["backend"], r["threads"], r["bytes_per_token"] / 2**20, r["ceiling_tok_s"],
                r["direct_gen_tok_s"], r["worker_gen_tok_s"], f"{r['direct_of_ceiling']:.0%}",
                f"{r['worker_of_ceiling']:.0%}"] for r in results["rows"] if r["bytes_per_token"] > IN_CACHE_BYTES]
    return [
        (f"Tokens/s through the worker vs the library directly (target: worker >= {TARGET:.0%} of direct)",
         markdown_table(["model", "backend", "threads", "worker LLM_PARALLEL", "prompt tokens", "direct prompt tok/s",
                         "worker prompt tok/s", "worker/direct", "max tokens", "direct gen tok/s", "worker gen tok/s",
                         "worker/direct", "both >= 95%"], speed)),
        (f"Generation against the memory-bandwidth ceiling ({bw['1']['bytes_per_s'] / 1e9:.1f} GB/s read by 1 "
         f"process, {bw['2']['bytes_per_s'] / 1e9:.1f} GB/s by 2)",
         markdown_table(["model", "backend", "threads", "MiB read per token", "ceiling tok/s", "direct tok/s",
                         "worker tok/s", "direct % of ceiling", "worker % of ceiling"], ceiling)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("model_speed", __doc__, argv, run_bench, tables)


if __name__ == "__main__":
    sys.exit(main())
