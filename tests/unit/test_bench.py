"""The pure parts of bench/: statistics, tables, wrk's report, the signed Twilio requests wrk replays, the
concurrency summaries and targets."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator

from bench.common import Latency, fmt, markdown_table, percentile, smaps_rollup
from bench.concurrency import (
    best_round,
    checks,
    common_prefix,
    descendants,
    kv_cache_bytes,
    person_text,
    summarize,
)
from bench.edge_throughput import TWILIO_TOKEN, parse_wrk, twilio_script
from bench.memory import children, worker_processes
from bench.redis_recovery import BUDGET, Figure, summary

WRK_REPORT = """Running 10s test @ http://127.0.0.1:46557/v1/messages
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    66.49ms   52.59ms 592.82ms   90.14%
    Req/Sec   535.72    234.62     0.88k    55.07%
  Latency Distribution
     50%   45.50ms
     75%   80.10ms
     90%  120.00ms
     99%    1.20s
  7455 requests in 14.03s, 2.67MB read
  Non-2xx or 3xx responses: 12
Requests/sec:    531.39
Transfer/sec:    195.04KB
"""


def test_percentile_is_nearest_rank() -> None:
    samples = [float(v) for v in range(1, 101)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_latency_summary_reports_completions_per_second() -> None:
    latency = Latency("x", [1.0, 2.0, 3.0, 4.0], wall_seconds=2.0)
    summary = latency.summary()
    assert (summary["n"], summary["p50_ms"], summary["max_ms"], summary["per_s"]) == (4, 2.0, 4.0, 2.0)


def test_markdown_table_formats_numbers_by_size() -> None:
    table = markdown_table(["a", "b"], [["x", 1234.5], ["y", float("nan")], ["z", True]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x | 1,234 |", "| y | - |", "| z | yes |"]
    assert (fmt(12.345), fmt(1.2345)) == ("12.3", "1.23")


def test_wrk_report_is_parsed_with_units() -> None:
    parsed = parse_wrk(WRK_REPORT)
    assert (parsed["rps"], parsed["requests"], parsed["non_2xx"]) == (531.39, 7455, 12)
    assert (parsed["p50_ms"], parsed["p99_ms"]) == (45.5, 1200.0)


def test_twilio_script_holds_distinct_correctly_signed_webhooks(tmp_path: Path) -> None:
    base = "http://127.0.0.1:8000"
    script = twilio_script(tmp_path / "t.lua", base, 5, "x").read_text()
    pairs = re.findall(r"^([^\t\n]+)\t([^\n]+)$", script, re.M)
    assert len(pairs) == 5
    validator = RequestValidator(TWILIO_TOKEN)
    sids = set()
    for body, signature in pairs:
        form = dict(parse_qsl(body))
        assert validator.validate(f"{base}/v1/channels/twilio/sms", form, signature)
        sids.add(form["MessageSid"])
    assert len(sids) == 5


def test_smaps_rollup_reads_this_process() -> None:
    memory = smaps_rollup(os.getpid())
    assert 0 < memory["uss"] <= memory["pss"] <= memory["rss"]


def test_redis_recovery_summary_gives_min_median_max_and_counts_runs_over_the_budget() -> None:
    nan = float("nan")
    figures = [Figure("kill-aof", 1, 1.0, 9.0, 200, 200, 0), Figure("kill-aof", 2, 3.0, 11.0, 200, 200, 1),
               Figure("kill-aof", 3, 2.0, nan, 150, 200, 0), Figure("shutdown", 1, nan, nan, 0, 200, 0)]
    rows = summary(figures)
    assert rows[0] == ["kill-aof", "3", "1.0 / 2.0 / 3.0", f"9.0 / 10.0 / 11.0 (1 over {BUDGET:.0f}s)", "550/600", "1"]
    assert rows[1][2:4] == [f"- (1 over {BUDGET:.0f}s)"] * 2


def test_kv_cache_of_tinyllama_at_2048_tokens_is_44_mib() -> None:
    # 22 layers, 2048 wide, 32 heads of which 4 for K/V: n_embd_k_gqa = 256; K and V, f16.
    assert kv_cache_bytes(n_layer=22, n_ctx=2048, n_embd=2048, n_head=32, n_head_kv=4) == 2 * 22 * 2048 * 256 * 2
    assert kv_cache_bytes(22, 2048, 2048, 32, 32) == 8 * kv_cache_bytes(22, 2048, 2048, 32, 4)  # no GQA
    assert kv_cache_bytes(22, 2048, 2048, 32, 4, value_bytes=4) == 2 * kv_cache_bytes(22, 2048, 2048, 32, 4)


def test_concurrency_summary_gives_medians_maxima_and_tokens_over_the_last_answer() -> None:
    people = [{"first_s": 0.5, "full_s": 4.0, "tokens": 64}, {"first_s": 1.5, "full_s": 8.0, "tokens": 64},
              {"first_s": 1.0, "full_s": 6.0, "tokens": 32}]
    s = summarize(people)
    assert (s["n"], s["first_median_s"], s["first_max_s"], s["full_median_s"], s["full_max_s"]) == (3, 1.0, 1.5,
                                                                                                     6.0, 8.0)
    assert s["tokens"] == 160
    assert s["agg_tok_s"] == 20.0
    assert math.isnan(summarize([])["agg_tok_s"])


def test_each_person_writes_a_text_of_their_own_from_the_first_word() -> None:
    texts = [person_text("run1", i) for i in range(8)]
    assert len({t.split(":")[0] for t in texts}) == 8
    assert len({len(t) for t in texts}) == 1  # the same prompt length for every person


def test_concurrency_targets_are_checked_against_the_measured_rows() -> None:
    mib = 2**20

    def row(engine: str, people: int, agg: float, first_max: float, full_max: float) -> dict[str, object]:
        return {"engine": engine, "people": people, "agg_tok_s": agg, "first_max_s": first_max, "full_max_s": full_max}

    results = {
        "rows": [row("raw", 4, 50.0, 1.0, 6.0), row("system@4", 1, 14.0, 0.4, 5.0),
                 row("system@4", 4, 40.0, 3.5, 7.0)],
        "memory": {"1": {"model_rss": 900 * mib}, "4": {"model_rss": 1000 * mib}},
        "kv_cache_bytes_per_sequence": 44 * mib,
    }
    found = {c["target"].split(" ")[0]: c["met"] for c in checks(results)}
    assert found == {"system@4": False, "last": True, "first": False, "model": True}


def test_descendants_include_the_process_itself() -> None:
    assert os.getpid() in descendants(os.getpid())


def test_the_best_round_counts_and_every_round_is_kept() -> None:
    best = best_round([{"agg_tok_s": 30.0, "full_max_s": 9.0}, {"agg_tok_s": 40.0, "full_max_s": 7.0}])
    assert best["full_max_s"] == 7.0
    assert best["rounds_agg_tok_s"] == [30.0, 40.0]


def test_common_prefix_is_what_every_sequence_starts_with() -> None:
    assert common_prefix([1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 7]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([5], [6]) == 0


def test_the_model_process_is_the_workers_child_that_is_not_the_resource_tracker() -> None:
    # A "worker" of its own (pytest's process has other children: Redis servers, helper processes) that starts
    # a resource tracker look-alike and a model look-alike, prints their pids and waits.
    script = (
        "import subprocess, sys, time\n"
        "sleep = 'import time; time.sleep(30)'\n"
        "tracker = subprocess.Popen([sys.executable, '-c', sleep + '  # multiprocessing.resource_tracker'])\n"
        "model = subprocess.Popen([sys.executable, '-c', sleep])\n"
        "print(tracker.pid, model.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        tracker, model = (int(pid) for pid in worker.stdout.readline().split())
        roles = dict(worker_processes(worker.pid))
        assert (roles["worker"], roles["model process"], roles["resource tracker"]) == (worker.pid, model, tracker)
    finally:
        for pid in children(worker.pid):
            os.kill(pid, signal.SIGKILL)
        worker.kill()
        worker.wait()
