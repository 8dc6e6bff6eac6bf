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


def _holds_model(role: str) -> bool:
    """The processes the model lives in: the model process (or a pool child, in results from before it)."""
    return role == "model process" or role.startswith("child")


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
        if m and _holds_model(labels[x].rsplit("\n", 1)[1]):
            ax.hlines(m + 150, x - 0.45, x + 0.45, colors="k", linestyles="--", lw=1)
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("MiB")
    ax.legend(title="dashed: model file + 150 MiB")
    shape = (f"the worker process and its model process, LLM_PARALLEL={results['parallel']}" if "parallel" in results
             else f"prefork concurrency {results['concurrency']}")  # results from before the threads pool
    ax.set_title(f"Core worker memory: {shape}\n{_subtitle(results)}", fontsize=10)
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


def concurrency(results: Results, out: Path) -> None:
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for engine, label, style in (("raw", "raw batched llama_decode (the limit)", "o-"),
                                 ("xllamacpp", "xllamacpp, n_parallel=8", "s--"),
                                 ("system@1", "system, LLM_PARALLEL=1", "^:"),
                                 ("system@4", "system, LLM_PARALLEL=4", "v-"),
                                 ("system@8", "system, LLM_PARALLEL=8", "D")):
        mine = sorted((r for r in rows if r["engine"] == engine), key=lambda r: r["people"])
        if mine:
            ax.plot([r["people"] for r in mine], [r["agg_tok_s"] for r in mine], style, label=label)
    people = results["people"]
    ax.set_xscale("log", base=2)
    ax.set_xticks(people, [str(n) for n in people])
    ax.set_xlabel("people writing at the same moment")
    ax.set_ylabel("aggregate tok/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Concurrency: several conversations on one model (TinyLlama-1.1B Q4_0, {results['threads']} "
                 f"threads)\n{_subtitle(results)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


PLOTS: dict[str, Callable[[Results, Path], None]] = {
    "pipeline": pipeline, "edge_throughput": edge_throughput, "model_speed": model_speed, "memory": memory,
    "scale": scale, "concurrency": concurrency,
}
IMAGES = {"concurrency": "concurrency.png"}  # the rest: bench-<name>.png


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
        out = IMG / IMAGES.get(name, f"bench-{name}.png")
        draw(json.loads(path.read_text()), out)
        print(f"  {out.relative_to(ROOT)}")
    tables = "\n".join(sections)
    (RESULTS / "tables.md").write_text(tables)
    print(f"  {(RESULTS / 'tables.md').relative_to(ROOT)}")
    if "--doc" in sys.argv[1:]:
        update_doc(tables)
    return 0


def _load(name: str) -> Results | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def targets() -> str:
    """One row per target with the measured figure, from whatever results exist."""
    rows = ["| target | measured | |", "|---|---|---|"]
    if (pipe := _load("pipeline")) is not None:
        for row in pipe["rows"]:
            p50 = row["total"]["p50_ms"] / row["celery"]["p50_ms"]
            rows.append(f"| pipeline p50 <= 2x bare Celery, {row['senders']} sender(s) | {p50:.1f}x "
                        f"({row['total']['p50_ms']:.1f} vs {row['celery']['p50_ms']:.2f} ms) | {_met(p50 <= 2)} |")
    if (edge := _load("edge_throughput")) is not None:
        for kind, label in (("api", "POST /v1/messages"), ("twilio", "Twilio SMS webhook")):
            e = max(r["rps"] for r in edge["runs"][kind])
            b = max(r["rps"] for r in edge["runs"][f"bare_{kind}"])
            rows.append(f"| {label} >= 50% of bare Flask | {e / b:.0%} ({e:.0f} vs {b:.0f} req/s) | "
                        f"{_met(e >= b / 2)} |")
    if (speed := _load("model_speed")) is not None:
        for r in speed["rows"]:
            worst = min(r["gen_ratio"], r["prompt_ratio"])
            rows.append(f"| worker >= 95% of direct, {r['model']} {r['backend']} {r['threads']}t | prompt "
                        f"{r['prompt_ratio']:.0%}, generation {r['gen_ratio']:.0%} | {_met(worst >= 0.95)} |")
        for f in speed.get("failures", []):
            rows.append(f"| worker >= 95% of direct, {f['model']} {f['backend']} {f['threads']}t | crashed | "
                        f"{_met(False)} |")
    if (mem := _load("memory")) is not None:
        # "child"/"parent" in results from before the threads pool: the pool children and their parent
        child, parent = ("model process", "worker process") if "parallel" in mem else ("child", "parent")
        for r in mem["rows"][1:]:
            worst = max(r["child_overhead"]) / MIB
            rows.append(f"| {child} RSS <= model + 150 MiB, {r['backend']} | model + {worst:.0f} MiB | "
                        f"{_met(r['children_within_target'])} |")
            rows.append(f"| {parent} does not load the model, {r['backend']} | {parent} +"
                        f"{r['parent_extra'] / MIB:.1f} MiB over the echo worker's | "
                        f"{_met(r['parent_without_model'] and r['one_copy_per_child'])} |")
        for f in mem.get("failures", []):
            rows.append(f"| {child} RSS <= model + 150 MiB, {f['backend']} | crashed | {_met(False)} |")
    if (sc := _load("scale")) is not None:
        one = sc["rows"][0]["answers_per_s"]
        for r in sc["rows"][1:]:
            rows.append(f"| {r['label']} answer more than 1 worker | {r['vs_one']:.2f}x ({r['answers_per_s']:.1f} vs "
                        f"{one:.1f}/s) | {_met(r['vs_one'] > 1.2)} |")
    if (conc := _load("concurrency")) is not None:
        for c in conc.get("checks", []):
            rows.append(f"| {c['target']} | {c['value']} | {_met(c['met'])} |")
    return "\n".join(rows)


def run_summary() -> str:
    lines: list[str] = []
    for name in PLOTS:
        if (res := _load(name)) is None:
            continue
        meta = res["meta"]
        if not lines:
            v = meta["versions"]
            lines.append(f"Machine: {meta['cpus']} vCPUs ({meta['cpu']}), {meta['mem_gib']} GiB RAM; Python "
                         f"{meta['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items())
                         + f"; llama_cpp build: {meta.get('llama_cpp_build', '?')}.\n")
        lines.append(f"- `{meta['command']}`: {meta['date']}, {meta['seconds']:.0f} s; machine "
                     f"{meta['busy_before']:.0%} busy before it started, all CPUs {meta['busy_during']:.0%} busy "
                     f"during the run (ours included); load average {meta['loadavg_before']:.1f} -> "
                     f"{meta['loadavg_after']:.1f}")
    return "\n".join(lines)


def _replace(text: str, key: str, body: str) -> str:
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    head, found, rest = text.partition(start)
    if not found:
        return text
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n\n{body.strip()}\n\n{end}{tail}"


def update_doc(tables: str) -> None:
    """Replace the generated parts of docs/benchmarks.md (between the markers) with the latest results."""
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    text = _replace(text, "results", re.sub(r"^(#+) ", r"#\1 ", tables, flags=re.M))  # one level deeper
    text = _replace(text, "summary", run_summary())
    text = _replace(text, "targets", targets())
    doc.write_text(text)
    print(f"  {doc.relative_to(ROOT)} (generated sections)")


if __name__ == "__main__":
    sys.exit(main())
