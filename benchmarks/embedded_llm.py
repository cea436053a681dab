"""The embedded models: load time, memory, generation speed, and how often their
answers are valid and usable, with and without JSON-schema constrained decoding.

Each model runs in its own process so memory figures are its own.

    python benchmarks/embedded_llm.py [--models qwen2.5-coder-1.5b qwen2.5-coder-0.5b]
                                      [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from mlpilot.llm import LLM, make_llm
from mlpilot.llm.embedded import DEFAULT_ORDER, EMBEDDED_MODELS, get_engine
from mlpilot.llm.structured import extract_json, response_format_for


class HpoProposal(BaseModel):
    family: Literal["random_forest", "extra_trees", "hist_gradient_boosting", "logistic_regression"]
    n_estimators: int = Field(ge=10, le=500)
    max_depth: int | None = Field(None, ge=1, le=32)
    learning_rate: float = Field(ge=0.001, le=1.0)


class PlanStep(BaseModel):
    kind: Literal["profile", "features", "hpo", "ensemble"]
    seconds: int = Field(ge=1, le=3600)


class Plan(BaseModel):
    steps: list[PlanStep] = Field(min_length=1, max_length=5)
    metric: Literal["roc_auc", "accuracy", "log_loss", "rmse", "mae"]


class Feature(BaseModel):
    name: str = Field(max_length=40)
    code: str = Field(max_length=300)
    reason: str = Field(max_length=200)


def _feature_usable(f: Feature) -> bool:
    try:
        compile(f.code, "<feature>", "exec")
    except SyntaxError:
        return False
    return "df[" in f.code


PROMPTS: list[tuple[str, type[BaseModel], str]] = [
    (
        "hpo",
        HpoProposal,
        "Binary classification, 569 rows, 30 numeric features, metric ROC AUC. Propose one "
        'model configuration. Example: {"family": "random_forest", "n_estimators": 300, '
        '"max_depth": 12, "learning_rate": 0.1}',
    ),
    (
        "hpo",
        HpoProposal,
        "Regression, 20000 rows, 8 numeric features, metric RMSE. Propose one model configuration."
        ' Example: {"family": "extra_trees", "n_estimators": 200, "max_depth": null, '
        '"learning_rate": 0.1}',
    ),
    (
        "plan",
        Plan,
        "A user asks: 'tune a model for churn.csv in 2 minutes, optimise AUC'. Write a plan of "
        'steps with a time budget each. Example: {"steps": [{"kind": "profile", '
        '"seconds": 5}, {"kind": "hpo", "seconds": 100}], "metric": "accuracy"}',
    ),
    (
        "plan",
        Plan,
        "A user asks: 'predict house prices, minimise RMSE, 10 minutes'. Write a plan of steps "
        'with a time budget each. Example: {"steps": [{"kind": "hpo", "seconds": 60}], '
        '"metric": "mae"}',
    ),
    (
        "feature",
        Feature,
        "A pandas DataFrame df has columns age, income, debt, months_employed (numeric) and a "
        "binary target default. Write one new feature as pandas code that assigns a new column of "
        'df. Example: {"name": "age_sq", "code": "df[\'age_sq\'] = df[\'age\'] ** 2", '
        '"reason": "non-linear age effect"}',
    ),
    (
        "feature",
        Feature,
        "A pandas DataFrame df has columns rooms, area_m2, year_built, distance_km (numeric) and "
        "target price. Write one new feature as pandas code that assigns a new column of df. "
        'Example: {"name": "x", "code": "df[\'x\'] = df[\'rooms\'] + 1", "reason": "..."}',
    ),
]


def run_one(model: str) -> dict[str, object]:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    llm: LLM = make_llm(f"embedded/{model}")
    engine = get_engine(model)
    t0 = time.perf_counter()
    llm.complete("Say OK.", max_tokens=2, temperature=0)
    first_call = time.perf_counter() - t0
    rows: dict[str, dict[str, int]] = {}
    gen_tokens, gen_seconds = 0, 0.0
    for constrained in (True, False):
        mode = "constrained" if constrained else "free"
        for kind, schema, prompt in PROMPTS:
            params = {"temperature": 0, "max_tokens": 300, "seed": 0}
            if constrained:
                params["response_format"] = response_format_for(schema)
            done = llm.complete(
                [
                    {"role": "system", "content": "Answer with one JSON object only."},
                    {"role": "user", "content": prompt},
                ],
                role=f"{kind}-{mode}",
                **params,
            )
            gen_tokens += done.usage.completion_tokens
            gen_seconds += done.latency_s
            cell = rows.setdefault(f"{mode}", {"asked": 0, "valid": 0, "usable": 0})
            cell["asked"] += 1
            try:
                value = schema.model_validate_json(extract_json(done.text))
            except (ValidationError, ValueError):
                continue
            cell["valid"] += 1
            cell["usable"] += int(not isinstance(value, Feature) or _feature_usable(value))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model,
        "threads": engine.n_threads,
        "load_s": round(engine.load_seconds or 0.0, 2),
        "first_call_s": round(first_call, 2),
        "rss_gb": round((rss - rss0) / 1024 / 1024, 2),
        "tokens_per_s": round(gen_tokens / gen_seconds, 1) if gen_seconds else 0.0,
        **{f"{m}_{k}": v for m, cell in rows.items() for k, v in cell.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="*", default=[m for m in DEFAULT_ORDER if EMBEDDED_MODELS[m].installed()]
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    env = dict(os.environ)
    if args.threads:
        env["MLPILOT_LLM_THREADS"] = str(args.threads)
    results = []
    for model in args.models:
        out = subprocess.run(
            [sys.executable, __file__, "--one", model],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{len(PROMPTS)} prompts (hyperparameters, plans, pandas features), temperature 0\n")
    print(
        "| model | threads | load s | RSS GB | tokens/s | constrained valid/usable | "
        "free valid/usable |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['threads']} | {r['load_s']} | {r['rss_gb']} | "
            f"{r['tokens_per_s']} | {r['constrained_valid']}/{r['constrained_usable']} of "
            f"{r['constrained_asked']} | {r['free_valid']}/{r['free_usable']} of "
            f"{r['free_asked']} |"
        )


if __name__ == "__main__":
    main()
