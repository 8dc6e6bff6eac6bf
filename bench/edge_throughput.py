"""Edge throughput: requests/s of POST /v1/messages and of the Twilio SMS webhook, against a bare Flask 202.

``.venv/bin/python bench/edge_throughput.py [--quick]`` (about 1.5 min; --quick ~25 s).

Load comes from ``wrk`` (Debian: ``apt-get install wrk``) in its own process,
driven by a Lua script: every API request is a distinct user, every Twilio
webhook a distinct ``MessageSid``, correctly signed with twilio's
``RequestValidator`` (signed in Python beforehand; wrk replays the list).
The edge runs under gunicorn with the product's settings
(``edge/gunicorn_conf.py``: 2 workers x 16 gthread threads, access log on);
the baseline is ``bench.baselines:bare_flask()`` under the very same settings.

No worker consumes the queues (the edge's own work ends at the enqueue), so the
``core`` queue grows during a run; Redis is flushed between runs.  wrk, gunicorn
and Redis share the two cores, so the absolute figures are the machine's; the
ratio is the point.  Target: each product endpoint >= 50% of the bare one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from bench.common import (
    BIN,
    Proc,
    Run,
    bench_env,
    markdown_table,
    model_file,
    ratio,
    redis_server,
    run_script,
    wait_until,
)
from tests.support.factories import API_KEY

TARGET = 0.5
CONNECTIONS = 32
TWILIO_TOKEN = "bench-twilio-auth-token-0123456789"
TWILIO_ACCOUNT = "AC" + "0" * 32

API_LUA = """
local n = 0
local prefix = "%(prefix)s"
request = function()
  n = n + 1
  local body = '{"user":"' .. prefix .. '-' .. n .. '","text":"hello from wrk"}'
  return wrk.format("POST", "/v1/messages", {["Content-Type"] = "application/json",
                                             ["Authorization"] = "Bearer %(key)s"}, body)
end
"""

TWILIO_LUA_HEAD = """
local n = 0
local reqs = {}
local data = [==[
"""
TWILIO_LUA_TAIL = r"""
]==]
for body, sig in data:gmatch("([^\t\n]+)\t([^\n]+)\n") do reqs[#reqs + 1] = {body, sig} end
request = function()
  n = n + 1
  local r = reqs[((n - 1) %% #reqs) + 1]
  return wrk.format("POST", "/v1/channels/twilio/sms",
    {["Content-Type"] = "application/x-www-form-urlencoded", ["X-Twilio-Signature"] = r[2]}, r[1])
end
"""


def twilio_script(path: Path, public_base_url: str, count: int, prefix: str) -> Path:
    """A Lua file with ``count`` distinct, correctly signed SMS webhooks for wrk to replay in order."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TWILIO_TOKEN)
    url = public_base_url.rstrip("/") + "/v1/channels/twilio/sms"
    lines = []
    for i in range(count):
        form = {"MessageSid": f"SM{prefix}{i:012d}", "AccountSid": TWILIO_ACCOUNT, "From": f"+1555{i % 10_000_000:07d}",
                "To": "+15550000000", "Body": "hello from wrk", "NumMedia": "0"}
        signature = validator.compute_signature(url, form)
        lines.append(f"{urlencode(form)}\t{signature}\n")
    path.write_text(TWILIO_LUA_HEAD + "".join(lines) + (TWILIO_LUA_TAIL % {}))
    return path


def wrk(url: str, script: Path, seconds: float, connections: int = CONNECTIONS) -> dict[str, Any]:
    """One wrk run (1 thread: load generation must leave the edge as much CPU as it can); parsed figures."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s", "-s", str(script),
            url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, Any]:
    """requests/s, request count, non-2xx count, socket errors and p50/p99 latency (ms) from wrk's report."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = {q: _ms(m.group(1)) for q, m in ((q, re.search(rf"^\s+{q}%\s+(\S+)", out, re.M)) for q in ("50", "99")) if m}
    return {"rps": rps, "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1) if errors else "", "p50_ms": lat.get("50", float("nan")),
            "p99_ms": lat.get("99", float("nan")), "output": out}


def _ms(text: str) -> float:
    value = float(re.sub(r"[a-z]+$", "", text))
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[re.sub(r"^[\d.]+", "", text)]


def gunicorn(name: str, app: str, env: dict[str, str], run: Run) -> Proc:
    argv = [str(BIN / "gunicorn"), "--config", "python:edge.gunicorn_conf", app]
    proc = Proc(name, argv, env, run.tmp)
    wait_until(lambda: requests.get(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=1).ok, 30, name)
    return proc


def run_bench(run: Run) -> dict[str, Any]:
    from tasks.signing import new_secret

    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    seconds, warm = (3.0, 1.0) if run.quick else (10.0, 2.0)
    rounds = 1 if run.quick else 2
    rows: dict[str, list[dict[str, Any]]] = {"bare_api": [], "api": [], "bare_twilio": [], "twilio": []}
    with redis_server(run.tmp) as server:
        env = bench_env(server.url, new_secret(), model_file("tiny", run.tmp), TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
                        TWILIO_ACCOUNT_SID=TWILIO_ACCOUNT)
        base = f"http://127.0.0.1:{env['PORT']}"
        # Enough distinct webhooks that no run replays one (a replay is a cheaper duplicate); checked below.
        signed = int((seconds + warm) * (1500 if run.quick else 2500))
        scripts: dict[str, Path] = {}
        for r in range(rounds):
            for kind in ("twilio", "api"):
                for target in (kind, f"bare_{kind}"):
                    prefix = f"{run.run_id}{r}{target.replace('_', '')}"
                    if kind == "api":
                        script = (run.tmp / f"{target}-{r}.lua")
                        script.write_text(API_LUA % {"prefix": prefix, "key": API_KEY})  # the test edge's client key
                    else:
                        script = twilio_script(run.tmp / f"{target}-{r}.lua", env["PUBLIC_BASE_URL"], signed,
                                               prefix[-10:])
                    scripts[f"{target}-{r}"] = script
        for r in range(rounds):
            for target in ("bare_api", "api", "bare_twilio", "twilio"):
                app = "bench.baselines:bare_flask()" if target.startswith("bare") else "edge.app:create_app()"
                server.client().flushall()
                proc = gunicorn(target, app, env, run)
                try:
                    script = scripts[f"{target}-{r}"]
                    path = "/v1/messages" if target.endswith("api") else "/v1/channels/twilio/sms"
                    warmed = wrk(base + path, script, warm)  # the first requests of each worker thread are slow
                    result = wrk(base + path, _fresh_copy(script, run.tmp, warmed["requests"]), seconds)
                finally:
                    proc.stop()
                queued = int(server.client().llen("core") or 0)
                result["queued_core"] = queued
                print(f"  {target}: {result['rps']:.0f} req/s (non-2xx {result['non_2xx']}, "
                      f"core queue {queued})", flush=True)
                if target == "twilio" and result["requests"] + warmed["requests"] > signed:
                    print("  warning: wrk replayed signed webhooks (duplicates are cheaper)", flush=True)
                rows[target].append({k: v for k, v in result.items() if k != "output"})
        server.client().flushall()
    return {"runs": rows, "seconds": seconds, "connections": CONNECTIONS, "target_ratio": TARGET,
            "gunicorn": _gunicorn_settings(env)}


def _fresh_copy(script: Path, tmp: Path, skip: int) -> Path:
    """The measured run must not replay the warm-up's ids: API ids get a new prefix; Twilio sids skip ahead."""
    text = script.read_text()
    if "local prefix" in text:
        text = re.sub(r'local prefix = "([^"]*)"', r'local prefix = "\1m"', text)
    else:
        text = text.replace("local n = 0", f"local n = {skip}", 1)
    out = tmp / f"measured-{script.name}"
    out.write_text(text)
    return out


def _gunicorn_settings(env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", "import edge.gunicorn_conf as c; print(c.workers, c.threads, c.worker_class)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    return {"workers": int(out[0]), "threads": int(out[1]), "worker_class": out[2]}


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    runs = results["runs"]

    def best(target: str) -> dict[str, Any]:
        return max(runs[target], key=lambda r: float(r["rps"]))

    rows = []
    for kind, label in (("api", "POST /v1/messages"), ("twilio", "POST /v1/channels/twilio/sms (signed)")):
        edge, bare = best(kind), best(f"bare_{kind}")
        share = ratio(edge["rps"], bare["rps"])
        rows.append([label, edge["rps"], bare["rps"], share, share >= results["target_ratio"], edge["p50_ms"],
                     bare["p50_ms"], edge["p99_ms"], edge["non_2xx"]])
    g = results["gunicorn"]
    title = (f"Edge throughput, wrk 1 thread x {results['connections']} connections, {results['seconds']:g} s "
             f"per run, best of {len(runs['api'])}; gunicorn {g['workers']} workers x {g['threads']} "
             f"{g['worker_class']} threads")
    return [(title, markdown_table(
        ["endpoint", "edge req/s", "bare Flask 202 req/s", "edge/bare", f">= {results['target_ratio']:.0%}",
         "edge p50 ms", "bare p50 ms", "edge p99 ms", "edge non-2xx"], rows))]


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("edge_throughput", __doc__, argv, run_bench, tables)


if __name__ == "__main__":
    sys.exit(main())
