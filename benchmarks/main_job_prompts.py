"""The embedded model on the README main job's own prompts (breast cancer, 120 s):
the planner's request and the four families' warm starts, as the run sends them,
timed one after another on a bare llama.cpp server with the given settings.

    python benchmarks/main_job_prompts.py [--model qwen2.5-coder-1.5b] [--threads 1]
        [--batch-threads N] [--grammar compact|llama] [--speculative none|ngram|draft]

Prints per request: seconds, seconds to the first token, prompt tokens (and how many
came from the prompt cache), answer tokens, prompt and generation speed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import xllamacpp
from sklearn.datasets import load_breast_cancer

from mlpilot.agents import llambo
from mlpilot.agents.planner import PLAN_MAX_TOKENS, PlanDraft, plan_messages
from mlpilot.llm.embedded import EMBEDDED_MODELS, ensure_model_file
from mlpilot.llm.grammar import compact_grammar
from mlpilot.llm.structured import response_format_for
from mlpilot.task import TaskSpec
from mlpilot.tools.profile import profile_frame, prompt_context

REQUEST = "tune a model for this dataset, predict target, optimise AUC"
FAMILIES = ("lightgbm", "random_forest", "extra_trees", "linear")


def requests() -> list[tuple[str, list[dict[str, str]], dict[str, Any], int]]:
    frame = load_breast_cancer(as_frame=True).frame
    task = TaskSpec.from_data(frame, request=REQUEST, target="target", name="breast_cancer")
    profile = profile_frame(task.X, task.y, text_columns=task.text_columns, classification=True)
    plan = plan_messages(REQUEST, task, profile, time_budget_s=120)
    out = [("plan", plan, response_format_for(PlanDraft), PLAN_MAX_TOKENS)]
    ctx = prompt_context(task, profile)
    for family in FAMILIES:
        model = llambo.Model.family(family)
        messages = llambo.proposal_messages(model, ctx, kind="warmstart", n=3)
        schema = response_format_for(llambo.config_model(model, 3))
        out.append((family, messages, schema, llambo.proposal_max_tokens(model, 3)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-1.5b", choices=sorted(EMBEDDED_MODELS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--grammar", default="compact", choices=("compact", "llama"))
    ap.add_argument("--speculative", default="none", choices=("none", "ngram", "draft"))
    args = ap.parse_args()
    p = xllamacpp.CommonParams()
    p.model.path = str(ensure_model_file(EMBEDDED_MODELS[args.model]))
    p.n_ctx, p.n_parallel = 8192, 1
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.batch_threads
    p.verbosity, p.warmup = -1, False
    kinds = xllamacpp.common_speculative_type
    if args.speculative == "ngram":
        p.speculative.types = [kinds.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
    elif args.speculative == "draft":
        p.speculative.types = [kinds.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
        draft = EMBEDDED_MODELS["qwen2.5-coder-0.5b"]
        p.speculative.draft.mparams.path = str(ensure_model_file(draft))
        p.speculative.draft.cpuparams.n_threads = args.threads
        p.speculative.draft.n_max = 8
    t0 = time.perf_counter()
    server = xllamacpp.Server(p)
    print(f"{args} load {time.perf_counter() - t0:.1f} s")
    print("| request | s | first token s | prompt (cached) | answer | prompt tok/s | gen tok/s |")
    print("|---|---|---|---|---|---|---|")
    total = 0.0
    for label, messages, fmt, max_tokens in requests():
        body: dict[str, Any] = {
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.0,
            "seed": 0,
            "max_tokens": max_tokens,
        }
        grammar = (
            compact_grammar(fmt["json_schema"]["schema"]) if args.grammar == "compact" else None
        )
        if grammar is not None:
            body["grammar"] = grammar
        else:
            body["response_format"] = fmt
        info: dict[str, Any] = {}
        first: list[float] = []
        start = time.perf_counter()

        def on_chunk(
            chunk: Any, start: float = start, info: dict = info, first: list = first
        ) -> bool:
            if isinstance(chunk, (str, bytes)):
                chunk = json.loads(chunk)
            for choice in chunk.get("choices") or ():
                if (choice.get("delta") or {}).get("content") and not first:
                    first.append(time.perf_counter() - start)
            info.update(chunk.get("usage") or {})
            info.update(chunk.get("timings") or {})
            return False

        server.handle_chat_completions(body, on_chunk)
        seconds = time.perf_counter() - start
        total += seconds
        print(
            f"| {label} | {seconds:.1f} | {(first or [0.0])[0]:.1f} | {info.get('prompt_tokens')} "
            f"({info.get('cache_n')}) | {info.get('completion_tokens')} | "
            f"{info.get('prompt_per_second', 0):.0f} | {info.get('predicted_per_second', 0):.1f} |"
        )
    print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
