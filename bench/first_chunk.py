"""Benchmark: time to first visible text vs time to the full reply, for web chat, Telegram and Slack.

Run ``.venv/bin/python bench/first_chunk.py [--quick] [--rounds N] [--max-tokens T] [--json OUT]`` from the
repository root (``--quick``: 2 rounds of 32 tokens, 1 hook pair).  It starts a real redis-server, the edge
(gunicorn), a core worker as the Procfile runs it (threads pool, ``LLM_PARALLEL`` task threads, the
model in a child process; llama_cpp backend, 2 threads) and an io worker (``deliver``) through
``tests/support/harness.py``, with
local fake Telegram and Slack servers (``tests/support/fake_*.py``, real HTTP).  The model is
the TinyLlama-1.1B-shaped random Q4_0 model (``core_worker/tiny_model.py``, cached in
``bench/.cache``), generating up to ``--max-tokens`` (default 128) tokens.

Rows, each measured from the moment the person's message reaches the edge:
- ``webchat``: ``POST /v1/messages`` with ``"stream": true``, then long polls
  ``GET /v1/messages/<id>?wait=25&partial=<seq>`` as the page does: first = the first
  partial in a poll answer, full = the answered record;
- ``webchat (no stream)``: the same without ``stream``: first = full (the baseline the
  streaming rows are compared with);
- ``telegram``: a webhook update: first = the fake Bot API receiving the first ``sendMessage``
  (the partial message), full = the call that made the chat show the final text;
- ``slack``: an ``app_mention`` event: first = the first ``chat.postMessage``, full = the call
  that made the thread show the final text.

Then (``--hook-runs``, default 3, 0 skips) the cost of the progress hook itself: the llama_cpp
backend in this process, same seed, calls alternating (ABBA order) without and with ``on_progress`` (a real
``PartialStream`` whose publish is a no-op): tokens/s of each, and the text must be identical.

Rows are interleaved round by round (one message of each row per round, each in a new session,
same prompt) so background noise hits them alike.  Prints a table with medians and the ratio
first/full, and writes JSON (default ``bench/results/first_chunk.json``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `tests` and the product importable
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from edge.channels.telegram.channel import EMPTY_REPLY  # noqa: E402  (Slack's is the same sentence)
from tests.support.factories import AUTH  # noqa: E402
from tests.support.fake_slack import BOT_TOKEN, SIGNING_SECRET, FakeSlack, SlackEvents  # noqa: E402
from tests.support.fake_telegram import TOKEN, FakeTelegram  # noqa: E402
from tests.support.harness import RedisServer, System, wait_until  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results" / "first_chunk.json"
MODEL_SHAPE = "tinyllama-1.1b"
PROMPT = "Tell me a long story about the weather, the sea and the people of a small town."
TELEGRAM_SECRET = "bench-secret_0123456789"
ELLIPSIS = " …"
ROWS = ("webchat", "webchat (no stream)", "telegram", "slack")
_ids = itertools.count(1)


def model_file() -> Path:
    """The TinyLlama-shaped random Q4_0 model, written once into bench/.cache (~600 MB)."""
    from core_worker.tiny_model import write_tiny_model

    path = CACHE / f"{MODEL_SHAPE}-q4_0.gguf"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} (~600 MB, once) ...", flush=True)
        write_tiny_model(path, shape=MODEL_SHAPE, quant="q4_0")
    return path


def environment(redis_url: str, secret: str, model: Path, telegram: FakeTelegram, slack: FakeSlack,
                max_tokens: int, backend: str, threads: int) -> dict[str, str]:
    from tests.support.harness import system_env

    return system_env(
        redis_url, secret, model,
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        LLM_BACKEND=backend, LLM_THREADS=str(threads), LLM_CONTEXT="2048", LLM_MAX_TOKENS=str(max_tokens),
        VISIBILITY_TIMEOUT="600", TASK_SOFT_TIME_LIMIT="240", TASK_TIME_LIMIT="300", SESSION_LOCK_SECONDS="15",
        SESSION_RETRY_SECONDS="0.5", UNACKED_RESTORE_INTERVAL="10",
        TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_WEBHOOK_SECRET=TELEGRAM_SECRET, TELEGRAM_API_BASE_URL=telegram.url,
        TELEGRAM_TYPING_SECONDS="0",
        SLACK_SIGNING_SECRET=SIGNING_SECRET, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_BASE_URL=slack.url,
    )


class Bench:
    def __init__(self, system: System, redis: Any, telegram: FakeTelegram, slack: FakeSlack) -> None:
        self.system, self.redis, self.telegram, self.slack = system, redis, telegram, slack
        self.events = SlackEvents(system.base_url)

    # --- web chat ---------------------------------------------------------------
    def webchat(self, stream: bool) -> dict[str, Any]:
        started = time.time()
        response = self.system.post(user=f"bench-{next(_ids)}", text=PROMPT, stream=stream)
        response.raise_for_status()
        message_id = response.json()["message_id"]
        first: float | None = None
        seq = 0
        while True:
            params = {"wait": 25, **({"partial": seq} if stream else {})}
            record = requests.get(f"{self.system.base_url}/v1/messages/{message_id}", params=params,
                                  headers=AUTH, timeout=40).json()
            now = time.time()
            if record["status"] in ("answered", "failed"):
                break
            if "partial" in record:
                seq = record["partial"]["seq"]
                first = first or now
        if record["status"] != "answered":
            raise RuntimeError(f"message failed: {record}")
        reply = record["reply"]
        return {"first_s": (first or now) - started, "full_s": now - started, "partials": seq,
                "completion_tokens": reply["completion_tokens"], "generation_ms": reply["generation_ms"]}

    # --- Telegram ---------------------------------------------------------------
    def telegram_run(self) -> dict[str, Any]:
        chat = 700_000 + next(_ids)
        update = {"update_id": next(_ids), "message": {"message_id": next(_ids), "date": 0, "text": PROMPT,
                                                      "chat": {"id": chat, "type": "private"},
                                                      "from": {"id": chat, "is_bot": False, "first_name": "B"}}}
        started = time.time()
        requests.post(f"{self.system.base_url}/v1/channels/telegram", json=update,
                      headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}, timeout=10).raise_for_status()
        reply = self.wait_reply(f"telegram:{chat}")
        final = reply["text"] or EMPTY_REPLY
        wait_until(lambda: "\n\n".join(self.telegram.shown(chat)) == final, 60, "the final text in the chat")
        calls = [c for c in list(self.telegram.calls) if c.payload.get("chat_id") == chat
                 and c.method in ("sendMessage", "editMessageText")]
        full = max(c.at for c in calls if not c.payload["text"].endswith(ELLIPSIS))
        return {"first_s": min(c.at for c in calls) - started, "full_s": full - started,
                "partials": sum(1 for c in calls if c.payload["text"].endswith(ELLIPSIS)),
                "completion_tokens": reply["completion_tokens"], "generation_ms": reply["generation_ms"]}

    # --- Slack ------------------------------------------------------------------
    def slack_run(self) -> dict[str, Any]:
        n = next(_ids)
        channel, ts = f"CB{n:06d}", f"{1_700_000_000 + n}.000100"
        started = time.time()
        self.events.post(SlackEvents.mention(PROMPT, event_id=f"EvB{n:06d}", channel=channel, ts=ts)).raise_for_status()
        reply = self.wait_reply(f"slack:T0TEST:{channel}:{ts}")
        escaped = (reply["text"] or EMPTY_REPLY).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        wait_until(lambda: "\n\n".join(self.slack.shown(channel)) == escaped, 60, "the final text in the thread")
        calls = [(at, args) for _, args, at in list(self.slack.calls) if args.get("channel") == channel]
        full = max(at for at, args in calls if not str(args.get("text")).endswith(ELLIPSIS))
        return {"first_s": min(at for at, _ in calls) - started, "full_s": full - started,
                "partials": sum(1 for _, args in calls if str(args.get("text")).endswith(ELLIPSIS)),
                "completion_tokens": reply["completion_tokens"], "generation_ms": reply["generation_ms"]}

    def wait_reply(self, session_id: str, timeout: float = 120) -> dict[str, Any]:
        """The stored reply of the (only) message of ``session_id``, once answered."""
        found: dict[str, Any] = {}

        def answered() -> bool:
            for key in self.redis.scan_iter("sb:msg:*", count=1000):
                if key.endswith(":events") or self.redis.hget(key, "session_id") != session_id:
                    continue
                if self.redis.hget(key, "status") == "answered":
                    found.update(json.loads(self.redis.hget(key, "reply")))
                    return True
            return False

        wait_until(answered, timeout, f"the answer in {session_id}", interval=0.1)
        return found


def hook_overhead(model: Path, runs: int, max_tokens: int, threads: int) -> dict[str, Any]:
    """tokens/s of plain calls vs calls reporting progress, alternating, same seed (so the same tokens)."""
    from core_worker.llm import BackendConfig, ChatMessage, load_backend
    from core_worker.streaming import PartialStream, PartialThrottle

    backend = load_backend(BackendConfig(backend="llama_cpp", model_path=str(model), n_ctx=2048, n_threads=threads,
                                         max_tokens=max_tokens, seed=1234))
    messages = [ChatMessage("user", PROMPT)]
    rates: dict[str, list[float]] = {"plain": [], "progress": []}
    texts: set[str] = set()
    published = 0
    try:
        backend.chat(messages, max_tokens=4)  # warm-up: the prompt is cached from here on, as in the worker
        for pair in range(runs):
            for mode in ("plain", "progress") if pair % 2 == 0 else ("progress", "plain"):  # ABBA: drift cancels
                stream = PartialStream(PartialThrottle(interval=0.4, first_chars=12), lambda seq, text: True)
                started = time.perf_counter()
                if mode == "plain":
                    completion = backend.chat(messages)
                else:
                    completion = backend.chat(messages, on_progress=stream)  # type: ignore[call-arg]
                    published += stream.published
                rates[mode].append(completion.completion_tokens / (time.perf_counter() - started))
                texts.add(completion.text)
    finally:
        backend.close()
    return {"runs": runs, "plain_tok_s_median": statistics.median(rates["plain"]),
            "progress_tok_s_median": statistics.median(rates["progress"]), "same_text": len(texts) == 1,
            "partials_per_call": published / runs if runs else 0, "plain_tok_s": rates["plain"],
            "progress_tok_s": rates["progress"]}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = [r["first_s"] for r in runs]
    full = [r["full_s"] for r in runs]
    return {
        "runs": len(runs),
        "first_s_median": statistics.median(first), "full_s_median": statistics.median(full),
        "first_s_min": min(first), "first_s_max": max(first), "full_s_min": min(full), "full_s_max": max(full),
        "ratio_median": statistics.median(r["first_s"] / r["full_s"] for r in runs),
        "partials_mean": statistics.fmean(r["partials"] for r in runs),
        "completion_tokens_mean": statistics.fmean(r["completion_tokens"] for r in runs),
        "tokens_per_s": statistics.fmean(r["completion_tokens"] / (r["generation_ms"] / 1000)
                                         for r in runs if r["generation_ms"]),
    }


def table(summary: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'row':<22}{'first (s)':>11}{'full (s)':>10}{'first/full':>12}{'partials':>10}{'tokens':>8}"
             f"{'tok/s':>7}"]
    for row, s in summary.items():
        lines.append(f"{row:<22}{s['first_s_median']:>11.2f}{s['full_s_median']:>10.2f}{s['ratio_median']:>12.2f}"
                     f"{s['partials_mean']:>10.1f}{s['completion_tokens_mean']:>8.0f}{s['tokens_per_s']:>7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="messages per row (default 5)")
    parser.add_argument("--max-tokens", type=int, default=128, help="LLM_MAX_TOKENS (default 128)")
    parser.add_argument("--backend", default="llama_cpp", choices=("llama_cpp", "ctransformers"),
                        help="LLM_BACKEND (default llama_cpp)")
    parser.add_argument("--threads", type=int, default=2,
                        help="LLM_THREADS (default 2; 1 is faster when other processes load the cores)")
    parser.add_argument("--hook-runs", type=int, default=3, help="pairs of direct calls timing the progress hook")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where to write results (default {RESULTS})")
    parser.add_argument("--quick", action="store_true", help="a fast check: 2 rounds of 32 tokens, 1 hook pair")
    parser.add_argument("--no-wait", action="store_true", help="accepted as by every bench script (make bench); "
                        "this one does not wait for an idle machine")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.max_tokens = min(args.rounds, 2), min(args.max_tokens, 32)
        args.hook_runs = min(args.hook_runs, 1)

    from tasks.settings import load_settings
    from tasks.signing import new_secret

    model = model_file()
    telegram, slack = FakeTelegram(), FakeSlack()
    with tempfile.TemporaryDirectory(prefix="first-chunk-") as tmp:
        redis_server = RedisServer(Path(tmp))
        system = System(environment(redis_server.url, new_secret(), model, telegram, slack, args.max_tokens,
                                    args.backend, args.threads),
                        Path(tmp))
        parallel = load_settings(system.env).parallel_conversations  # the core worker's task threads
        try:
            print(f"starting redis, edge, core worker ({args.backend}, {args.threads} threads, "
                  f"LLM_PARALLEL={parallel}) and io worker ...", flush=True)
            system.start_all(io_concurrency=4)
            bench = Bench(system, redis_server.client(), telegram, slack)
            measure: dict[str, Callable[[], dict[str, Any]]] = {
                "webchat": lambda: bench.webchat(stream=True),
                "webchat (no stream)": lambda: bench.webchat(stream=False),
                "telegram": bench.telegram_run,
                "slack": bench.slack_run,
            }
            measure["webchat"]()  # warm-up: first load, first request per gunicorn worker
            runs: dict[str, list[dict[str, Any]]] = {row: [] for row in ROWS}
            for round_no in range(args.rounds):
                for row in ROWS:
                    runs[row].append(measure[row]())
                    time.sleep(0.3)  # let the worker ack and pop before the next model call
                print(f"  round {round_no + 1}/{args.rounds} done", flush=True)
        except Exception:
            print(system.logs(), file=sys.stderr)
            raise
        finally:
            system.stop()
            redis_server.stop()
            telegram.close()
            slack.close()
    summary = {row: summarize(runs[row]) for row in ROWS}
    print()
    print(table(summary))
    hook = hook_overhead(model, args.hook_runs, args.max_tokens, args.threads) if args.hook_runs > 0 else None
    if hook:
        print(f"\nprogress hook, direct llama_cpp calls: {hook['plain_tok_s_median']:.1f} tok/s plain vs "
              f"{hook['progress_tok_s_median']:.1f} with progress ({hook['partials_per_call']:.0f} partials per call, "
              f"same text: {hook['same_text']})")
    result = {
        "benchmark": "first_chunk",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "model": f"{MODEL_SHAPE} random Q4_0 (core_worker/tiny_model.py)",
        "backend": args.backend, "threads": args.threads, "core_parallel": parallel,
        "max_tokens": args.max_tokens, "rounds": args.rounds, "quick": args.quick,
        "settings": {"STREAM_INTERVAL_SECONDS": 0.4, "TELEGRAM_STREAM_INTERVAL": 1.0, "SLACK_STREAM_INTERVAL": 1.0,
                     "STREAM_FIRST_CHARS": 12},
        "summary": summary, "progress_hook": hook, "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
