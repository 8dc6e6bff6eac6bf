"""The pure parts of bench/: statistics, tables, wrk's report, the signed Twilio requests wrk replays."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl

from twilio.request_validator import RequestValidator

from bench.common import Latency, fmt, markdown_table, percentile, smaps_rollup
from bench.edge_throughput import TWILIO_TOKEN, parse_wrk, twilio_script
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
