"""Where the edge's CPU goes under load: py-spy on the gunicorn workers while wrk drives one endpoint.

``.venv/bin/python bench/profile_edge.py [api|twilio] [--seconds N]`` (not part of ``make bench``).

The edge runs as in ``bench/edge_throughput.py`` (product gunicorn settings, no worker consuming) and
``py-spy record --gil --subprocesses`` samples only threads holding the GIL, i.e. Python CPU time, not time spent
waiting for Redis.  Prints the frames with the largest inclusive share and writes the raw stacks (flamegraph.pl
or speedscope can draw them) to ``bench/results/profile_edge-<endpoint>.raw``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from bench.common import BIN, RESULTS, Run, bench_env, model_file, redis_server
from bench.edge_throughput import API_LUA, TWILIO_ACCOUNT, TWILIO_TOKEN, gunicorn, twilio_script


def summarize(raw: Path, top: int = 40) -> str:
    """The ``top`` frames by inclusive share of the samples (a frame counted once per stack)."""
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            if not frame.startswith(("process ", "Thread.", "_worker (", "_WorkItem.run")):
                inclusive[frame] += n
    lines = [f"{total} samples holding the GIL"]
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("endpoint", choices=("api", "twilio"), nargs="?", default="api")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    from tasks.signing import new_secret

    run = Run(f"profile_edge-{args.endpoint}", argparse.Namespace(quick=False, no_wait=True))
    with redis_server(run.tmp) as server:
        env = bench_env(server.url, new_secret(), model_file("tiny", run.tmp), TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
                        TWILIO_ACCOUNT_SID=TWILIO_ACCOUNT)
        base = f"http://127.0.0.1:{env['PORT']}"
        if args.endpoint == "api":
            script, path = run.tmp / "api.lua", "/v1/messages"
            script.write_text(API_LUA % {"prefix": run.run_id})
        else:
            path = "/v1/channels/twilio/sms"
            script = twilio_script(run.tmp / "twilio.lua", env["PUBLIC_BASE_URL"], int(args.seconds * 3000), "p")
        proc = gunicorn("edge", "edge.app:create_app()", env, run)
        raw = RESULTS / f"profile_edge-{args.endpoint}.raw"
        RESULTS.mkdir(parents=True, exist_ok=True)
        try:
            assert proc.popen is not None
            seconds = args.seconds + 4
            load = subprocess.Popen(["wrk", "-t1", "-c32", f"-d{seconds:g}s", "-s", str(script), base + path],
                                    stdout=subprocess.PIPE, text=True)
            time.sleep(2)  # past the first, slow requests of each worker
            subprocess.run([str(BIN / "py-spy"), "record", "--pid", str(proc.popen.pid), "--subprocesses", "--gil",
                            "--nonblocking", "-r", "200", "-d", str(int(args.seconds)), "--format", "raw", "-o",
                            str(raw)], check=True, capture_output=True)
            print(load.communicate()[0])
        finally:
            proc.stop()
    print(summarize(raw))
    print(f"\n(raw stacks in {raw.relative_to(RESULTS.parents[1])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
