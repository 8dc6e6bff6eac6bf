"""Concurrency: N conversations on one model at once, through the system vs batched llama.cpp vs xllamacpp.

``.venv/bin/python bench/concurrency.py [--quick]`` (about 6 min; --quick, N = 1 and 4 with 32-token answers,
one round, ~2 min).  The TinyLlama-1.1B-shaped random Q4_0 model (``bench/.cache``), 2 threads, greedy
(``LLM_TEMPERATURE=0``), up to 64 new tokens per answer, every conversation its own prompt (the system prompt, then
"Person <tag>-<i>: ..." so that only the system prompt is shared).  N = 1, 2, 4, 8 people at the same moment,
two rounds each (the round with the best aggregate tok/s counts; every round's figure is in the JSON):

* system: the real system (redis-server, gunicorn edge, the core worker from ``core_worker.llm_worker`` as the
  Procfile runs it: threads pool, ``LLM_PARALLEL`` task threads; an io worker), once per ``LLM_PARALLEL`` (1 = one
  at a time, the baseline; 4; 8 for N = 8 only).  Each person POSTs ``/v1/messages`` with ``stream: true`` from a
  new user, then long-polls
  ``GET /v1/messages/<id>?wait=25&partial=<seq>``: first token = the first poll answer with a partial (the default
  stream settings: the first partial is due after ``STREAM_FIRST_CHARS`` characters), full = the answered record.
  Aggregate tok/s = the replies' ``completion_tokens`` / wall time (first POST to last answer).  After the runs of
  each setting, the RSS of the core worker's processes (``/proc/<pid>/smaps_rollup``; the model may live in a
  child process of the worker: the process holding the most is reported, and the tree's sum).
* xllamacpp: llama.cpp's own server in-process (``xllamacpp.Server``, ``n_parallel=8``, continuous batching) in a
  child process, N threads calling ``handle_chat_completions`` (streamed) at once.  Optional (``pip install -e
  '.[bench]'``): the row is skipped, with the reason printed, when it is not installed.
* raw: the limit of batched decoding, in this process through llama-cpp-python's low-level API: one context with
  ``n_seq_max=N``, ``n_ctx = N x LLM_CONTEXT`` and a unified KV cache, ``llama_batch_init(512, 0, N)``, one
  ``seq_id`` per conversation, all prompts read in shared 512-token batches, then one ``llama_decode`` per step with
  one token per conversation and ``llama_sampler_sample(smpl, ctx, i)`` (greedy) per sequence.  The system prompt's
  tokens (the prefix every prompt shares with the warm-up's) are read before the clock starts and copied to every
  sequence with ``llama_memory_seq_cp``: the worker's and xllamacpp's prefix caches hold them from earlier
  conversations too.  First token = the end of the prompt reading.

The system runs first and the in-process model last (llama.cpp children hang if their parent ran a model before
forking; here nothing forks after it).  Targets: system@4 >= 90% of raw at N = 4; the last of 4 answered within
1.5x a lone person's time; first token within 3 s for all of 4; RSS@4 <= RSS@1 + 4 x the KV cache of
``LLM_CONTEXT`` (2 x n_layer x n_ctx x n_embd_k_gqa x 2 bytes, f16).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

import requests

from bench.common import (
    MODEL_CONTEXT,
    ROOT,
    Run,
    System,
    bench_env,
    markdown_table,
    model_file,
    python_path,
    ratio,
    redis_server,
    run_script,
    running_system,
    smaps_rollup,
)

SHAPE = "tinyllama-1.1b"
THREADS = 2
PROMPT_TEXT = "Tell me a long story about the weather, the sea and the people of a small town."
MAX_TOKENS, MAX_TOKENS_QUICK = 64, 32
PEOPLE, PEOPLE_QUICK = (1, 2, 4, 8), (1, 4)
ROUNDS, ROUNDS_QUICK = 2, 1  # rounds per (engine, N); the best one counts
XLLAMACPP_SLOTS = 8
BATCH = 512
TARGET_OF_RAW, TARGET_LAST_OF_4, TARGET_FIRST_S = 0.9, 1.5, 3.0
MIB = 2**20


# --------------------------------------------------------------------------- pure helpers
def kv_cache_bytes(n_layer: int, n_ctx: int, n_embd: int, n_head: int, n_head_kv: int, value_bytes: int = 2) -> int:
    """Bytes of one sequence's K and V cache: 2 x n_layer x n_ctx x n_embd_k_gqa x value_bytes (f16: 2)."""
    n_embd_k_gqa = n_embd // n_head * n_head_kv
    return 2 * n_layer * n_ctx * n_embd_k_gqa * value_bytes


def summarize(people: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-person ``first_s``/``full_s`` (seconds from the common start) and ``tokens``: medians, maxima and the
    aggregate tok/s (all tokens over the wall time, which ends with the last answer)."""
    first = [float(p["first_s"]) for p in people]
    full = [float(p["full_s"]) for p in people]
    tokens = sum(int(p["tokens"]) for p in people)
    wall = max(full) if full else float("nan")
    return {"n": len(people), "first_median_s": statistics.median(first) if first else float("nan"),
            "first_max_s": max(first) if first else float("nan"),
            "full_median_s": statistics.median(full) if full else float("nan"), "full_max_s": wall,
            "tokens": tokens, "agg_tok_s": tokens / wall if wall and wall == wall else float("nan")}


def best_round(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The round with the highest aggregate tok/s (on a shared machine a slow round is someone else's load), with
    every round's aggregate tok/s kept beside it."""
    best = dict(max(rounds, key=lambda r: r["agg_tok_s"]))
    best["rounds_agg_tok_s"] = [r["agg_tok_s"] for r in rounds]
    return best


def common_prefix(*sequences: Sequence[int]) -> int:
    """Length of the prefix all ``sequences`` share."""
    n = 0
    for items in zip(*sequences, strict=False):
        if any(x != items[0] for x in items):
            break
        n += 1
    return n


def person_text(tag: str, i: int) -> str:
    """Each person's own message: it differs from every other from its first word (no shared prefix beyond the
    system prompt)."""
    return f"Person {tag}-{i:02d}: {PROMPT_TEXT}"


def chat_messages(text: str) -> list[dict[str, str]]:
    from tasks.settings import load_settings

    system = load_settings().system_prompt
    return [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": text}]


# --------------------------------------------------------------------------- c. the whole system
def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (from /proc/*/stat)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += [child for child, parent in parents.items() if parent == current]
    return sorted(found)


def worker_memory(pid: int) -> dict[str, Any]:
    processes = []
    for p in descendants(pid):
        try:
            processes.append({"pid": p, **smaps_rollup(p)})
        except OSError:
            continue
    model = max(processes, key=lambda p: p["rss"])
    return {"processes": processes, "tree_rss": sum(p["rss"] for p in processes), "model_rss": model["rss"],
            "model_pid": model["pid"], "model_is_child": model["pid"] != pid}


def one_person(system: System, user: str, text: str, start: float) -> dict[str, Any]:
    from tests.support.factories import AUTH

    response = system.post(user=user, text=text, stream=True)
    if response.status_code != 202:
        raise RuntimeError(f"POST answered {response.status_code}: {response.text[:300]}")
    message_id = response.json()["message_id"]
    first: float | None = None
    seq = refused = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        answer = requests.get(f"{system.base_url}/v1/messages/{message_id}", params={"wait": 25, "partial": seq},
                              headers=AUTH, timeout=40)
        now = time.monotonic()
        if answer.status_code == 429:  # every long-poll slot taken (should not happen with LONG_POLL_PER_CLIENT)
            refused += 1
            time.sleep(0.05)
            continue
        answer.raise_for_status()
        record = answer.json()
        if record["status"] in ("answered", "failed"):
            break
        if "partial" in record:
            seq = record["partial"]["seq"]
            first = first or now
    else:
        raise TimeoutError(f"message {message_id} not answered within 600 s")
    if record["status"] != "answered":
        raise RuntimeError(f"message {message_id} failed: {record.get('error')}")
    reply = record["reply"]
    return {"first_s": (first or now) - start, "full_s": now - start, "tokens": int(reply["completion_tokens"]),
            "prompt_tokens": int(reply["prompt_tokens"]), "generation_ms": float(reply["generation_ms"]),
            "streamed": first is not None, "polls_refused": refused}


def at_once(n: int, person: Callable[[int, float], dict[str, Any]]) -> list[dict[str, Any]]:
    """``n`` threads released together; each calls ``person(i, start)``; their results (any error re-raised)."""
    barrier = threading.Barrier(n + 1)
    results: list[dict[str, Any] | None] = [None] * n
    errors: list[BaseException] = []
    start = [0.0]

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = person(i, start[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    start[0] = time.monotonic()
    barrier.wait()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def system_rows(run: Run, model: Path, people: Sequence[int], max_tokens: int,
                rounds: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from tasks.signing import new_secret

    settings = [(1, people), (4, people)] + ([(8, [8])] if 8 in people else [])
    rows: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    with redis_server(run.tmp) as server:
        env = bench_env(server.url, new_secret(), model, LLM_BACKEND="llama_cpp", LLM_THREADS=str(THREADS),
                        LLM_MAX_TOKENS=str(max_tokens), LLM_TEMPERATURE="0",
                        # every person polls from 127.0.0.1: one "client" to the edge's long-poll bound (default 2)
                        LONG_POLL_PER_CLIENT=str(2 * max(people)))
        with running_system(env, run.tmp) as system:
            system.start_edge()
            system.start_worker("io", "deliver", pool="threads", concurrency=4)
            for parallel, ns in settings:
                name = f"core-p{parallel}"
                system.env["LLM_PARALLEL"] = str(parallel)
                proc = system.start_worker(name, "core", concurrency=parallel)  # as system.core_worker: the
                # Procfile's threads pool with LLM_PARALLEL task threads
                try:
                    assert proc.popen is not None
                    one_person(system, f"warm-{run.run_id}-p{parallel}", person_text("warm", parallel),
                               time.monotonic())
                    for n in ns:
                        measured = []
                        for round_no in range(rounds):
                            tag = f"{run.run_id}-p{parallel}-n{n}-r{round_no}"
                            time.sleep(0.5)  # the worker acks and pops after the last reply is visible

                            def person(i: int, start: float, tag: str = tag) -> dict[str, Any]:
                                return one_person(system, f"bench-{tag}-{i}", person_text(tag, i), start)

                            runs = at_once(n, person)
                            measured.append({"engine": f"system@{parallel}", "parallel": parallel, "people": n,
                                             **summarize(runs), "runs": runs})
                        row = best_round(measured)
                        rows.append(row)
                        print(f"  system LLM_PARALLEL={parallel}, {n} at once: {row['agg_tok_s']:.1f} tok/s, "
                              f"first max {row['first_max_s']:.2f} s, last answer {row['full_max_s']:.1f} s",
                              flush=True)
                    time.sleep(1.0)
                    memory[str(parallel)] = worker_memory(proc.popen.pid)
                    print(f"  system LLM_PARALLEL={parallel}: model process RSS "
                          f"{memory[str(parallel)]['model_rss'] / MIB:.0f} MiB, worker tree "
                          f"{memory[str(parallel)]['tree_rss'] / MIB:.0f} MiB", flush=True)
                finally:
                    system.procs.pop(name).stop()
    return rows, memory


# --------------------------------------------------------------------------- b. xllamacpp (in a child process)
def xllamacpp_child() -> None:
    """``python -c 'from bench.concurrency import xllamacpp_child; xllamacpp_child()'`` with a JSON spec on stdin;
    prints ``RESULT <json>`` (llama.cpp's own log goes to stderr)."""
    import xllamacpp

    spec = json.loads(sys.stdin.read())
    params = xllamacpp.CommonParams()
    params.model.path = spec["model"]
    params.n_parallel = spec["slots"]
    params.n_ctx = spec["slots"] * spec["n_ctx"]
    params.cont_batching = True
    params.cpuparams.n_threads = spec["threads"]
    params.cpuparams_batch.n_threads = spec["threads"]
    params.n_gpu_layers = 0
    params.sampling.temp = 0
    server = xllamacpp.Server(params)

    def request(text: str, start: float) -> dict[str, Any]:
        first: list[float] = []
        last: dict[str, Any] = {}

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if not first and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                first.append(time.monotonic())
            if "timings" in chunk:
                last.update(chunk["timings"])
            return False  # go on

        server.handle_chat_completions({"messages": chat_messages(text), "max_tokens": spec["max_tokens"],
                                        "temperature": 0, "stream": True}, on_chunk)
        done = time.monotonic()
        return {"first_s": (first[0] if first else done) - start, "full_s": done - start,
                "tokens": int(last.get("predicted_n", 0)), "prompt_tokens": int(last.get("prompt_n", 0)),
                "streamed": bool(first)}

    request(person_text("warm", 0), time.monotonic())
    rows = []
    for n in spec["people"]:
        measured = []
        for round_no in range(spec["rounds"]):
            tag = f"x{spec['run_id']}-n{n}-r{round_no}"

            def person(i: int, start: float, tag: str = tag) -> dict[str, Any]:
                return request(person_text(tag, i), start)

            runs = at_once(n, person)
            measured.append({"engine": "xllamacpp", "people": n, **summarize(runs), "runs": runs})
        rows.append(best_round(measured))
    rows[-1]["rss"] = smaps_rollup(os.getpid())["rss"]
    print("RESULT " + json.dumps({"rows": rows, "version": xllamacpp.__version__}), flush=True)
    os._exit(0)  # the server's threads would keep the process alive


def xllamacpp_rows(run: Run, model: Path, people: Sequence[int], max_tokens: int, rounds: int) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        installed = version("xllamacpp")
    except Exception:
        reason = "xllamacpp is not installed (pip install -e '.[bench]'): row skipped"
        print(f"  {reason}", flush=True)
        return {"rows": [], "skipped": reason}
    spec = {"model": str(model), "slots": XLLAMACPP_SLOTS, "n_ctx": MODEL_CONTEXT, "threads": THREADS,
            "max_tokens": max_tokens, "people": list(people), "run_id": run.run_id, "rounds": rounds}
    log = run.tmp / "xllamacpp.log"
    with log.open("w") as err:
        child = "from bench.concurrency import xllamacpp_child; xllamacpp_child()"
        done = subprocess.run([sys.executable, "-c", child],
                              input=json.dumps(spec), stdout=subprocess.PIPE, stderr=err, text=True, timeout=1800,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": python_path()}, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        reason = f"xllamacpp {installed} failed (exit {done.returncode}; log {log}): {log.read_text()[-300:]}"
        print(f"  {reason}", flush=True)
        return {"rows": [], "skipped": reason}
    result: dict[str, Any] = json.loads(line[len("RESULT "):])
    for row in result["rows"]:
        print(f"  xllamacpp, {row['people']} at once: {row['agg_tok_s']:.1f} tok/s, first max "
              f"{row['first_max_s']:.2f} s, last answer {row['full_max_s']:.1f} s", flush=True)
    return result


# --------------------------------------------------------------------------- a. raw batched decoding (this process)
class RawModel:
    """The model through llama-cpp-python's low-level API, one batched context per measurement."""

    def __init__(self, path: Path, threads: int) -> None:
        import llama_cpp as lc
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp's load and context logs: errors only
        self.lc, self.threads = lc, threads
        lc.llama_backend_init()
        params = lc.llama_model_default_params()
        params.use_mmap = False  # as our backend loads it
        params.n_gpu_layers = 0
        self.model = lc.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.vocab = lc.llama_model_get_vocab(self.model)
        from core_worker.chat_template import read_gguf_info, template_for_model

        self.template = template_for_model(read_gguf_info(path))

    def tokens(self, text: str) -> list[int]:
        """The chat-templated prompt (system prompt and one user message), special tokens parsed."""
        from core_worker.llm.base import ChatMessage

        rendered = self.template.render([ChatMessage(m["role"], m["content"]) for m in chat_messages(text)])
        data = rendered.encode()
        buf = (self.lc.llama_token * (len(data) + 8))()
        n = self.lc.llama_tokenize(self.vocab, data, len(data), buf, len(buf), True, True)
        if n < 0:
            raise RuntimeError("prompt too long to tokenize")
        return list(buf[:n])

    def generate(self, prompts: Sequence[list[int]], max_tokens: int, cached: int = 0) -> dict[str, Any]:
        """All prompts at once, one sequence each; greedy until EOG or ``max_tokens``.  The first ``cached`` tokens
        (shared by every prompt: the system prompt) are read into sequence 0 before the clock starts and copied to
        the others (``llama_memory_seq_cp``), as the worker's and xllamacpp's prefix caches hold them from earlier
        conversations."""
        lc, n = self.lc, len(prompts)
        cached = min(cached, *(len(p) - 1 for p in prompts))
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n * MODEL_CONTEXT
        cparams.n_batch = cparams.n_ubatch = BATCH
        cparams.n_seq_max = n
        cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.kv_unified = True  # one cache all sequences share cells of (as llama-cpp-python's Llama sets it)
        self.flash_attn_type = int(cparams.flash_attn_type)  # llama.cpp's default (auto); recorded with the rows
        ctx = lc.llama_init_from_model(self.model, cparams)
        if not ctx:
            raise RuntimeError(f"no llama.cpp context for {n} sequences")
        smpl = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        lc.llama_sampler_chain_add(smpl, lc.llama_sampler_init_greedy())
        batch = lc.llama_batch_init(BATCH, 0, n)
        last: list[int] = [0] * n
        pos = [len(p) for p in prompts]
        made = [0] * n
        first_at = [0.0] * n
        done_at = [0.0] * n
        try:
            lc.llama_memory_clear(lc.llama_get_memory(ctx), True)

            def add(token: int, position: int, seq: int, logits: bool) -> int:
                i = batch.n_tokens
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = logits
                batch.n_tokens = i + 1
                return i

            def decode() -> None:
                rc = lc.llama_decode(ctx, batch)
                if rc != 0:
                    raise RuntimeError(f"llama_decode returned {rc}")

            batch.n_tokens = 0
            for j, token in enumerate(prompts[0][:cached]):  # the cached prefix, off the clock
                add(token, j, 0, False)
                if batch.n_tokens == BATCH:
                    decode()
                    batch.n_tokens = 0
            if batch.n_tokens:
                decode()
            started = time.monotonic()
            mem = lc.llama_get_memory(ctx)
            for seq in range(1, n if cached else 0):
                lc.llama_memory_seq_cp(mem, 0, seq, -1, -1)
            # Prompts: packed into shared 512-token batches; logits only for each prompt's last token.
            pending: dict[int, int] = {}
            batch.n_tokens = 0
            for seq, prompt in enumerate(prompts):
                for j, token in enumerate(prompt):
                    if j < cached:
                        continue
                    if batch.n_tokens == BATCH:
                        decode()
                        for s, i in pending.items():
                            last[s] = lc.llama_sampler_sample(smpl, ctx, i)
                        pending, batch.n_tokens = {}, 0
                    i = add(token, j, seq, j == len(prompt) - 1)
                    if j == len(prompt) - 1:
                        pending[seq] = i
            decode()
            for s, i in pending.items():
                last[s] = lc.llama_sampler_sample(smpl, ctx, i)
            prefill_s = time.monotonic() - started
            active = []
            for s in range(n):
                made[s], first_at[s] = 1, prefill_s
                if lc.llama_vocab_is_eog(self.vocab, last[s]) or made[s] >= max_tokens:
                    done_at[s] = prefill_s
                else:
                    active.append(s)
            # Generation: one decode per step, one token per live conversation.
            while active:
                batch.n_tokens = 0
                index = {s: add(last[s], pos[s], s, True) for s in active}
                decode()
                now = time.monotonic() - started
                still = []
                for s in active:
                    pos[s] += 1
                    last[s] = lc.llama_sampler_sample(smpl, ctx, index[s])
                    made[s] += 1
                    if lc.llama_vocab_is_eog(self.vocab, last[s]) or made[s] >= max_tokens:
                        done_at[s] = now
                    else:
                        still.append(s)
                active = still
            for s in range(n):
                lc.llama_memory_seq_rm(lc.llama_get_memory(ctx), s, -1, -1)
        finally:
            lc.llama_batch_free(batch)
            lc.llama_sampler_free(smpl)
            lc.llama_free(ctx)
        runs = [{"first_s": first_at[s], "full_s": done_at[s], "tokens": made[s], "prompt_tokens": len(prompts[s])}
                for s in range(n)]
        return {"prefill_s": prefill_s, "prompt_tokens": sum(len(p) for p in prompts), "cached_tokens": cached,
                "runs": runs}

    def close(self) -> None:
        self.lc.llama_model_free(self.model)


def raw_rows(run: Run, model: Path, people: Sequence[int], max_tokens: int, rounds: int) -> list[dict[str, Any]]:
    raw = RawModel(model, THREADS)
    rows = []
    try:
        warm = raw.tokens(person_text("warm", 0))
        raw.generate([warm], 4)
        for n in people:
            measured = []
            for round_no in range(rounds):
                tag = f"r{run.run_id}-n{n}-r{round_no}"
                prompts = [raw.tokens(person_text(tag, i)) for i in range(n)]
                result = raw.generate(prompts, max_tokens, cached=common_prefix(warm, *prompts))
                measured.append({"engine": "raw", "people": n, **summarize(result["runs"]),
                                 "prefill_s": result["prefill_s"], "flash_attn_type": raw.flash_attn_type,
                                 "prompt_tokens": result["prompt_tokens"], "cached_tokens": result["cached_tokens"],
                                 "runs": result["runs"]})
            row = best_round(measured)
            decode_s = row["full_max_s"] - row["prefill_s"]
            row["decode_tok_s"] = (row["tokens"] - n) / decode_s if decode_s > 0 else float("nan")
            rows.append(row)
            print(f"  raw batched decode, {n} sequences: {row['agg_tok_s']:.1f} tok/s ({row['decode_tok_s']:.1f} "
                  f"after the prompts), prompts {row['prefill_s']:.2f} s, all done {row['full_max_s']:.1f} s",
                  flush=True)
        rows[-1]["rss"] = smaps_rollup(os.getpid())["rss"]
    finally:
        raw.close()
    return rows


# --------------------------------------------------------------------------- the run
def run_bench(run: Run) -> dict[str, Any]:
    from core_worker.tiny_model import SHAPES

    people = PEOPLE_QUICK if run.quick else PEOPLE
    max_tokens = MAX_TOKENS_QUICK if run.quick else MAX_TOKENS
    model = model_file(SHAPE, run.tmp)
    shape = SHAPES[SHAPE]
    kv = kv_cache_bytes(shape.n_layer, MODEL_CONTEXT, shape.n_embd, shape.n_head, shape.n_head_kv)
    rounds = ROUNDS_QUICK if run.quick else ROUNDS
    system, memory = system_rows(run, model, people, max_tokens, rounds)
    xl = xllamacpp_rows(run, model, people, max_tokens, rounds)
    raw = raw_rows(run, model, people, max_tokens, rounds)
    results = {"model": f"{SHAPE} random Q4_0 (core_worker/tiny_model.py)", "threads": THREADS,
            "max_tokens": max_tokens, "people": list(people), "rounds": rounds, "n_ctx_per_sequence": MODEL_CONTEXT,
            "kv_cache_bytes_per_sequence": kv, "rows": raw + xl["rows"] + system, "memory": memory,
            "xllamacpp": {k: v for k, v in xl.items() if k != "rows"},
            "targets": {"system_of_raw_at_4": TARGET_OF_RAW, "last_of_4_vs_lone": TARGET_LAST_OF_4,
                        "first_max_at_4_s": TARGET_FIRST_S}}
    results["checks"] = checks(results)  # also read by bench/plots.py for docs/benchmarks.md's targets
    return results


def find(rows: Sequence[Mapping[str, Any]], engine: str, people: int) -> Mapping[str, Any] | None:
    return next((r for r in rows if r["engine"] == engine and r["people"] == people), None)


def checks(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The targets, each with its measured figure and whether it holds."""
    rows, out = results["rows"], []
    raw4, sys4, lone = find(rows, "raw", 4), find(rows, "system@4", 4), find(rows, "system@4", 1)
    if raw4 and sys4:
        value = ratio(sys4["agg_tok_s"], raw4["agg_tok_s"])
        out.append({"target": f"system@4 >= {TARGET_OF_RAW:.0%} of raw at N=4", "value": f"{value:.2f}",
                    "met": value >= TARGET_OF_RAW})
    if sys4 and lone:
        value = ratio(sys4["full_max_s"], lone["full_max_s"])
        out.append({"target": f"last of 4 answered <= {TARGET_LAST_OF_4}x a lone person (system@4)",
                    "value": f"{value:.2f}x ({sys4['full_max_s']:.1f} vs {lone['full_max_s']:.1f} s)",
                    "met": value <= TARGET_LAST_OF_4})
    if sys4:
        out.append({"target": f"first token of all 4 <= {TARGET_FIRST_S:.0f} s (system@4)",
                    "value": f"{sys4['first_max_s']:.2f} s", "met": sys4["first_max_s"] <= TARGET_FIRST_S})
    mem = results["memory"]
    if "1" in mem and "4" in mem:
        kv = results["kv_cache_bytes_per_sequence"]
        limit = mem["1"]["model_rss"] + 4 * kv
        out.append({"target": "model process RSS@4 <= RSS@1 + 4 x KV cache of LLM_CONTEXT",
                    "value": f"{mem['4']['model_rss'] / MIB:.0f} vs {limit / MIB:.0f} MiB "
                             f"({mem['1']['model_rss'] / MIB:.0f} + 4 x {kv / MIB:.0f})",
                    "met": mem["4"]["model_rss"] <= limit})
    return out


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = results["rows"]
    engines = [e for e in ("raw", "xllamacpp", "system@1", "system@4", "system@8")
               if any(r["engine"] == e for r in rows)]

    def agg(engine: str, n: int) -> float:
        row = find(rows, engine, n)
        return float(row["agg_tok_s"]) if row else float("nan")

    throughput = [[n, *(agg(e, n) for e in engines), ratio(agg("system@4", n), agg("system@1", n)),
                   ratio(agg("system@4", n), agg("raw", n)), ratio(agg("system@8", n), agg("raw", n)),
                   ratio(agg("xllamacpp", n), agg("raw", n))] for n in results["people"]]
    people = [[r["engine"], r["people"], r["tokens"], r["first_median_s"], r["first_max_s"], r["full_median_s"],
               r["full_max_s"], r["agg_tok_s"], ratio(r["full_max_s"], (find(rows, r["engine"], 1) or {"full_max_s":
                                                                                                     float("nan")})["full_max_s"])]
              for r in rows]
    mem = results["memory"]
    memory = [[f"LLM_PARALLEL={k}", m["model_rss"] / MIB, m["tree_rss"] / MIB, len(m["processes"]),
               "child" if m["model_is_child"] else "worker itself"] for k, m in mem.items()]
    skipped = results["xllamacpp"].get("skipped")
    note = f" (xllamacpp: {skipped})" if skipped else ""
    return [
        (f"Aggregate tok/s, N people at once, TinyLlama-1.1B Q4_0, {results['threads']} threads, greedy, up to "
         f"{results['max_tokens']} tokens each{note}",
         markdown_table(["N", *engines, "system@4 / system@1", "system@4 / raw", "system@8 / raw", "xllamacpp / raw"],
                        throughput)),
        ("Per person: seconds from the common start to the first token (system: first partial) and to the full "
         "answer; last / lone = the last answer at N vs the same engine with one person",
         markdown_table(["engine", "N", "tokens", "first median", "first max", "full median", "full max", "tok/s",
                         "last / lone"], people)),
        (f"Core worker memory after the runs (MiB); KV cache of one LLM_CONTEXT={results['n_ctx_per_sequence']} "
         f"sequence: {results['kv_cache_bytes_per_sequence'] / MIB:.0f} MiB (f16)",
         markdown_table(["setting", "model process RSS", "worker tree RSS", "processes", "model in"], memory)),
        ("Targets", markdown_table(["target", "measured", "met"],
                                   [[c["target"], c["value"], c["met"]] for c in checks(results)])),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("concurrency", __doc__, argv, run_bench, tables)


if __name__ == "__main__":
    sys.exit(main())
