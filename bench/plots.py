"""Render the benchmark results (``bench/results/*.json``) as PNGs in ``docs/img/`` for docs/benchmarks.md.

``.venv/bin/python bench/plots.py`` draws whatever results exist, says which are missing, and collects every
script's tables (with when and how busy the machine was) in ``bench/results/tables.md`` for the doc.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
IMG = ROOT / "docs" / "img"
MIB = 2**20

Results = dict[str, Any]


def _subtitle(results: Results) -> str:
    meta = results["meta"]
    return f"{meta['date']}, {meta['cpus']} CPUs; all CPUs busy {meta['busy_during']:.0%} during the run"


def pipeline(results: Results, out: Path) -> None:
    rows = results["rows"]
    senders = [r["senders"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, q in zip(axes, ("p50_ms", "p99_ms"), strict=True):
        for key, label, style in (("total", "pipeline POST -> callback", "o-"), ("celery", "bare Celery no-op", "s--"),
                                  ("redis", "raw Redis LPUSH/BRPOP", "^:")):
            ax.plot(senders, [r[key][q] for r in rows], style, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(senders, [str(s) for s in senders])
        ax.set_xlabel("concurrent senders")
        ax.set_ylabel(f"{q[:3]} latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Pipeline overhead (echo backend)\n{_subtitle(results)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def edge_throughput(results: Results, out: Path) -> None:
    runs = results["runs"]
    labels = ["POST /v1/messages", "Twilio SMS webhook"]
    edge = [max(r["rps"] for r in runs[k]) for k in ("api", "twilio")]
    bare = [max(r["rps"] for r in runs[k]) for k in ("bare_api", "bare_twilio")]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], bare, 0.4, label="bare Flask, same gunicorn settings")
    ax.bar([x + 0.2 for x in xs], edge, 0.4, label="Switchboard edge")
    for x, (e, b) in enumerate(zip(edge, bare, strict=True)):
        ax.text(x + 0.2, e, f"{e / b:.0%}", ha="center", va="bottom")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("requests/s (wrk)")
    ax.legend()
    ax.set_title(f"Edge throughput\n{_subtitle(results)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def model_speed(results: Results, out: Path) -> None:
    rows = results["rows"]
    labels = [f"{r['model'].split(' ')[0]}\n{r['backend']} {r['threads']}t" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = range(len(rows))
    axes[0].bar([x - 0.2 for x in xs], [r["prompt_ratio"] for r in rows], 0.4, label="prompt")
    axes[0].bar([x + 0.2 for x in xs], [r["gen_ratio"] for r in rows], 0.4, label="generation")
    axes[0].axhline(results["target_ratio"], color="k", ls="--", lw=1, label="target 95%")
    axes[0].set_xticks(list(xs), labels, fontsize=8)
    axes[0].set_ylabel("worker tok/s / direct tok/s")
    axes[0].legend()
    axes[0].set_title("through the worker vs the library directly", fontsize=10)
    big = [r for r in rows if r["bytes_per_token"] > 64 * MIB]
    bx = range(len(big))
    axes[1].bar([x - 0.2 for x in bx], [r["direct_of_ceiling"] for r in big], 0.4, label="direct")
    axes[1].bar([x + 0.2 for x in bx], [r["worker_of_ceiling"] for r in big], 0.4, label="worker")
    axes[1].set_xticks(list(bx), [f"{r['backend']} {r['threads']}t" for r in big])
    axes[1].set_ylabel("generation tok/s / bandwidth ceiling")
    axes[1].legend()
    axes[1].set_title("TinyLlama-1.1B Q4_0 against the memory-bandwidth ceiling", fontsize=10)
    fig.suptitle(f"Model speed\n{_subtitle(results)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def memory(results: Results, out: Path) -> None:
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(9, 4.2))
    labels, rss, uss, model = [], [], [], []
    for row in rows:
        for p in row["processes"]:
            labels.append(f"{row['label'].replace('TinyLlama-1.1B Q4_0, ', '')}\n{p['role']}")
            rss.append(p["rss"] / MIB)
            uss.append(p["uss"] / MIB)
            model.append(row["model_bytes"] / MIB if "echo" not in row["label"] else 0)
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], rss, 0.4, label="RSS")
    ax.bar([x + 0.2 for x in xs], uss, 0.4, label="USS (private)")
    for x, m in zip(xs, model, strict=True):
        if m and "parent" not in labels[x]:
            ax.hlines(m + 150, x - 0.45, x + 0.45, colors="k", linestyles="--", lw=1)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("MiB")
    ax.legend(title="dashed: model file + 150 MiB")
    ax.set_title(f"Core worker memory, prefork concurrency {results['concurrency']}\n{_subtitle(results)}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def scale(results: Results, out: Path) -> None:
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = ["tab:orange" if r["netns"] else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), [r["answers_per_s"] for r in rows], color=colors)
    ax.set_xticks(range(len(rows)), [r["label"].replace(" + ", "\n+ ") for r in rows], fontsize=8)
    ax.set_ylabel("answers/s")
    ax.set_title(f"Scale: core worker processes (orange: one in a network namespace)\n{_subtitle(results)}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


PLOTS: dict[str, Callable[[Results, Path], None]] = {
    "pipeline": pipeline, "edge_throughput": edge_throughput, "model_speed": model_speed, "memory": memory,
    "scale": scale,
}


def tables_markdown(name: str, results: Results) -> str:
    """One script's section; results not written through bench/common.Run get a plain pointer instead."""
    try:
        return _section(name, results)
    except (KeyError, TypeError, ValueError):
        return f"## bench/{name}.py\n\n(see bench/results/{name}.json)\n"


def _section(name: str, results: Results) -> str:
    meta = results["meta"]
    head = (f"## bench/{name}.py\n\n`{meta['command']}`, {meta['date']}, {meta['seconds']} s; machine busy "
            f"{meta['busy_before']:.0%} before, all CPUs {meta['busy_during']:.0%} busy during the run (ours "
            f"included); load average {meta['loadavg_before']:.2f} before, {meta['loadavg_after']:.2f} after.\n")
    return "\n".join([head, *(f"### {t['title']}\n\n{t['markdown']}\n" for t in results.get("tables", []))])


def main() -> int:
    IMG.mkdir(parents=True, exist_ok=True)
    sections = []
    for path in sorted(RESULTS.glob("*.json")):
        sections.append(tables_markdown(path.stem, json.loads(path.read_text())))
    for name, draw in PLOTS.items():
        path = RESULTS / f"{name}.json"
        if not path.exists():
            print(f"  no {path.relative_to(ROOT)}: run bench/{name}.py first")
            continue
        out = IMG / f"bench-{name}.png"
        draw(json.loads(path.read_text()), out)
        print(f"  {out.relative_to(ROOT)}")
    tables = "\n".join(sections)
    (RESULTS / "tables.md").write_text(tables)
    print(f"  {(RESULTS / 'tables.md').relative_to(ROOT)}")
    if "--doc" in sys.argv[1:]:
        update_doc(tables)
    return 0


START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def update_doc(tables: str) -> None:
    """Replace the generated part of docs/benchmarks.md (between the markers) with the latest tables."""
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    body = re.sub(r"^(#+) ", r"#\1 ", tables, flags=re.M)  # one level deeper than in tables.md
    doc.write_text(f"{head}{START}\n\n{body.strip()}\n\n{END}{tail}")
    print(f"  {doc.relative_to(ROOT)} (results section)")


if __name__ == "__main__":
    sys.exit(main())
