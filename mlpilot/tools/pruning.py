"""Structural pruning of a BERT text classifier: masks by hooks, slicing, counting.

A sub-network (:class:`SubNet`) keeps, per encoder layer, whether the layer stays,
its first ``heads[i]`` attention heads and its first ``units[i]`` feed-forward
units. "First" is in the order :func:`rewire` leaves them in: most important first,
so "keep the first k" keeps the k that matter most.

Three ways to run a sub-network, which agree to float tolerance (the tests pin it):

- :func:`masked` on the full model: forward pre-hooks zero the dropped heads'
  outputs and the dropped units' activations, and the dropped layers are taken
  out of the encoder's layer list for the duration (transformers 5 has no
  ``head_mask`` argument). Weights stay shared, which is what super-network
  training needs.
- :func:`slice_model`: a physically smaller copy, whose linear layers hold only
  the kept rows and columns.
- :func:`load_classifier` on what :func:`save_classifier` wrote: safetensors
  weights and a JSON architecture; loading runs no code from the folder.

Standalone: imports nothing from mlpilot, so sandbox jobs get it handed in next
to them. Needs torch and transformers.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel

try:  # in the package
    from mlpilot.tools.subnets import (
        SPACES,
        UNIT_STEP,
        EncoderShape,
        SubNet,
        encoder_params,
        from_params,
        sample,
        smallest,
        space_ranges,
    )
except ImportError:  # in a sandbox job, with subnets.py handed in next to this file
    from subnets import (  # type: ignore[no-redef]
        SPACES,
        UNIT_STEP,
        EncoderShape,
        SubNet,
        encoder_params,
        from_params,
        sample,
        smallest,
        space_ranges,
    )

__all__ = [
    "SPACES",
    "UNIT_STEP",
    "EncoderShape",
    "SubNet",
    "TextClassifier",
    "encoder_params",
    "from_params",
    "from_pretrained",
    "importance",
    "load_classifier",
    "masked",
    "param_counts",
    "rewire",
    "sample",
    "save_classifier",
    "shape_of",
    "slice_model",
    "smallest",
    "space_ranges",
]

WEIGHTS = "model.safetensors"
ARCH = "arch.json"
TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


class TextClassifier(nn.Module):
    """A BERT encoder, mean pooling over the tokens and a linear head.

    Mean pooling is how MiniLM sentence encoders were trained, so a head on it
    learns from few examples; ``BertModel``'s pooler is not used.
    """

    def __init__(self, config: BertConfig, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))


def from_pretrained(model_dir: str | Path, num_labels: int) -> TextClassifier:
    """A classifier whose encoder starts from the weights in ``model_dir`` (local
    files only) and whose head is new."""
    model_dir = Path(model_dir)
    config = BertConfig.from_json_file(str(model_dir / "config.json"))
    model = TextClassifier(config, num_labels)
    from safetensors.torch import load_file

    state = load_file(str(model_dir / WEIGHTS))
    encoder_state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    missing, unexpected = model.bert.load_state_dict(encoder_state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or [k for k in unexpected if not k.endswith("position_ids")]:
        raise ValueError(f"{model_dir} is not a BERT encoder: missing {missing[:5]}")
    return model


def layer_list(model: TextClassifier) -> nn.ModuleList:
    return model.bert.encoder.layer


def shape_of(model: TextClassifier) -> EncoderShape:
    return EncoderShape.of(model.bert.config)


def _scale_input(mask: torch.Tensor):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (args[0] * mask, *args[1:])

    return hook


def _mask(size: int, keep: int, block: int, like: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros(size, dtype=like.dtype, device=like.device)
    mask[: keep * block] = 1.0
    return mask


@contextmanager
def masked(model: TextClassifier, subnet: SubNet) -> Iterator[TextClassifier]:
    """Run ``model`` as the sub-network while the context is open (weights shared).

    Heads and units are masked by forward pre-hooks on the two output projections
    (a head's output and a unit's activation enter the network only there);
    dropped layers leave the encoder's layer list until the context closes.
    """
    shape = shape_of(model)
    subnet.check(shape)
    layers = layer_list(model)
    like = next(model.parameters())
    handles = []
    try:
        for i in subnet.kept:
            layer = layers[i]
            if subnet.heads[i] < shape.heads:
                mask = _mask(shape.hidden, subnet.heads[i], shape.head_size, like)
                handles.append(
                    layer.attention.output.dense.register_forward_pre_hook(_scale_input(mask))
                )
            if subnet.units[i] < shape.units:
                mask = _mask(shape.units, subnet.units[i], 1, like)
                handles.append(layer.output.dense.register_forward_pre_hook(_scale_input(mask)))
        model.bert.encoder.layer = nn.ModuleList([layers[i] for i in subnet.kept])
        yield model
    finally:
        model.bert.encoder.layer = layers
        for handle in handles:
            handle.remove()


def _linear(module: nn.Linear, rows: int | None = None, cols: int | None = None) -> nn.Linear:
    weight = module.weight.detach()[:rows, :cols].clone()
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
    out.weight = nn.Parameter(weight)
    if module.bias is not None:
        out.bias = nn.Parameter(module.bias.detach()[:rows].clone())
    return out


def _resize_layer(layer: nn.Module, heads: int, units: int, head_size: int, sliced: bool) -> None:
    """Give one encoder layer ``heads`` heads and ``units`` units: sliced from its
    weights, or (``sliced=False``) as empty modules of that shape for loading into."""

    def cut(module: nn.Linear, rows: int | None = None, cols: int | None = None) -> nn.Linear:
        if sliced:
            return _linear(module, rows, cols)
        n_out = rows if rows is not None else module.out_features
        n_in = cols if cols is not None else module.in_features
        return nn.Linear(n_in, n_out, bias=module.bias is not None)

    width = heads * head_size
    attention = layer.attention.self
    attention.query = cut(attention.query, rows=width)
    attention.key = cut(attention.key, rows=width)
    attention.value = cut(attention.value, rows=width)
    attention.num_attention_heads = heads
    attention.all_head_size = width
    layer.attention.output.dense = cut(layer.attention.output.dense, cols=width)
    layer.intermediate.dense = cut(layer.intermediate.dense, rows=units)
    layer.output.dense = cut(layer.output.dense, cols=units)


def slice_model(model: TextClassifier, subnet: SubNet) -> TextClassifier:
    """A physically smaller copy of ``model`` that computes the sub-network."""
    shape = shape_of(model)
    subnet.check(shape)
    small = copy.deepcopy(model)
    layers = layer_list(small)
    for i in subnet.kept:
        _resize_layer(layers[i], subnet.heads[i], subnet.units[i], shape.head_size, sliced=True)
    small.bert.encoder.layer = nn.ModuleList([layers[i] for i in subnet.kept])
    small.bert.config.num_hidden_layers = len(subnet.kept)
    return small


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(model: TextClassifier) -> dict[str, int]:
    """Parameters of a (possibly sliced) classifier: embeddings, encoder layers, head."""
    return {
        "embeddings": count_params(model.bert.embeddings),
        "encoder": count_params(model.bert.encoder),
        "head": count_params(model.head),
    }


# ----------------------------------------------------------------- importance, rewiring


@contextmanager
def _gates(model: TextClassifier) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """Multiplicative gates of value 1 on every head and unit, whose gradients
    measure importance (Michel et al. 2019: the loss's sensitivity to a head's mask)."""
    shape = shape_of(model)
    like = next(model.parameters())
    head_gates, unit_gates, handles = [], [], []

    def head_hook(gate: torch.Tensor):
        def hook(module: nn.Module, args: tuple) -> tuple:
            return (args[0] * gate.repeat_interleave(shape.head_size), *args[1:])

        return hook

    try:
        for layer in layer_list(model):
            hg = torch.ones(shape.heads, dtype=like.dtype, device=like.device, requires_grad=True)
            ug = torch.ones(shape.units, dtype=like.dtype, device=like.device, requires_grad=True)
            head_gates.append(hg)
            unit_gates.append(ug)
            handles.append(layer.attention.output.dense.register_forward_pre_hook(head_hook(hg)))
            handles.append(layer.output.dense.register_forward_pre_hook(_scale_input(ug)))
        yield head_gates, unit_gates
    finally:
        for handle in handles:
            handle.remove()


def importance(
    model: TextClassifier, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head and unit importance: the mean absolute gradient of the cross-entropy
    with respect to each gate, per layer normalised to unit L2 norm (Michel et al.).

    Args:
        batches: ``(input_ids, attention_mask, labels)`` triples.

    Returns:
        ``(layers, heads)`` and ``(layers, units)`` tensors.
    """
    was_training = model.training
    model.eval()
    shape = shape_of(model)
    heads = torch.zeros(shape.layers, shape.heads)
    units = torch.zeros(shape.layers, shape.units)
    with _gates(model) as (head_gates, unit_gates):
        for ids, mask, labels in batches:
            loss = nn.functional.cross_entropy(model(ids, mask), labels)
            grads = torch.autograd.grad(loss, head_gates + unit_gates)
            for i in range(shape.layers):
                heads[i] += grads[i].detach().abs().cpu()
                units[i] += grads[shape.layers + i].detach().abs().cpu()
    model.train(was_training)
    heads = heads / heads.norm(dim=1, keepdim=True).clamp(min=1e-12)
    units = units / units.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return heads, units


def _permute(module: nn.Linear, order: torch.Tensor, dim: int) -> None:
    with torch.no_grad():
        module.weight.copy_(module.weight.index_select(dim, order))
        if dim == 0 and module.bias is not None:
            module.bias.copy_(module.bias.index_select(0, order))


def rewire(model: TextClassifier, head_scores: torch.Tensor, unit_scores: torch.Tensor) -> None:
    """Reorder every layer's heads and units, most important first, in place.

    The network computes the same function afterwards (heads and units are
    permuted consistently on both sides); only "the first k" changes meaning.
    """
    shape = shape_of(model)
    d = shape.head_size
    for i, layer in enumerate(layer_list(model)):
        head_order = torch.argsort(head_scores[i], descending=True, stable=True)
        dims = (head_order[:, None] * d + torch.arange(d)[None, :]).reshape(-1)
        dims = dims.to(layer.attention.self.query.weight.device)
        for proj in (
            layer.attention.self.query,
            layer.attention.self.key,
            layer.attention.self.value,
        ):
            _permute(proj, dims, 0)
        _permute(layer.attention.output.dense, dims, 1)
        unit_order = torch.argsort(unit_scores[i], descending=True, stable=True)
        unit_order = unit_order.to(layer.intermediate.dense.weight.device)
        _permute(layer.intermediate.dense, unit_order, 0)
        _permute(layer.output.dense, unit_order, 1)


# ------------------------------------------------------------------------ save / load


def save_classifier(
    model: TextClassifier,
    directory: str | Path,
    labels: Sequence[Any],
    tokenizer_dir: str | Path,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a (sliced) classifier as safetensors weights, its architecture as JSON
    and the tokenizer's files, so :func:`load_classifier` rebuilds it without
    running code from the folder."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layers = layer_list(model)
    config = model.bert.config.to_dict()
    arch = {
        "config": {k: config[k] for k in _CONFIG_KEYS if k in config},
        "heads": [
            int(layer.attention.self.query.out_features // _head_size(config)) for layer in layers
        ],
        "units": [int(layer.intermediate.dense.out_features) for layer in layers],
        "labels": [_plain(v) for v in labels],
        **(extra or {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    (directory / ARCH).write_text(json.dumps(arch, indent=1))
    for name in TOKENIZER_FILES:
        source = Path(tokenizer_dir) / name
        if source.is_file():
            (directory / name).write_bytes(source.read_bytes())
    return directory


_CONFIG_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
)


def _head_size(config: dict[str, Any]) -> int:
    return int(config["hidden_size"]) // int(config["num_attention_heads"])


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def read_arch(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / ARCH).read_text())


def load_classifier(directory: str | Path) -> tuple[TextClassifier, dict[str, Any]]:
    """The classifier :func:`save_classifier` wrote, and its architecture record."""
    from safetensors.torch import load_file

    directory = Path(directory)
    arch = read_arch(directory)
    config = BertConfig(**arch["config"])
    config.num_hidden_layers = len(arch["heads"])
    model = TextClassifier(config, len(arch["labels"]))
    d = config.hidden_size // config.num_attention_heads
    for layer, heads, units in zip(layer_list(model), arch["heads"], arch["units"], strict=True):
        _resize_layer(layer, int(heads), int(units), d, sliced=False)
    model.load_state_dict(load_file(str(directory / WEIGHTS)), strict=True)
    model.eval()
    return model, arch


class TextPredictor:
    """A saved classifier and its tokenizer, predicting labels for raw texts.

    Args:
        directory: what :func:`save_classifier` wrote.
        max_length: tokens per text (longer texts are cut).
    """

    def __init__(self, directory: str | Path, max_length: int = 128, batch_size: int = 64) -> None:
        self.directory = Path(directory)
        self.max_length = max_length
        self.batch_size = batch_size
        self._loaded: tuple[TextClassifier, Any, list[Any]] | None = None

    def load(self) -> TextPredictor:
        from transformers import AutoTokenizer

        model, arch = load_classifier(self.directory)
        tokenizer = AutoTokenizer.from_pretrained(str(self.directory), local_files_only=True)
        self._loaded = (model, tokenizer, list(arch["labels"]))
        return self

    @property
    def labels(self) -> list[Any]:
        return self._parts()[2]

    @property
    def model(self) -> TextClassifier:
        return self._parts()[0]

    def _parts(self) -> tuple[TextClassifier, Any, list[Any]]:
        if self._loaded is None:
            self.load()
        assert self._loaded is not None
        return self._loaded

    def encode(self, texts: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        _, tokenizer, _ = self._parts()
        enc = tokenizer(
            ["" if t is None else str(t) for t in texts],
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]

    def predict_proba(self, texts: Sequence[Any]) -> Any:
        """Class probabilities, one row per text, columns in :attr:`labels` order."""
        import numpy as np

        model, _, labels = self._parts()
        model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                ids, mask = self.encode(list(texts[start : start + self.batch_size]))
                out.append(torch.softmax(model(ids, mask), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(labels)))

    def predict(self, texts: Sequence[Any]) -> list[Any]:
        labels = self.labels
        return [labels[i] for i in self.predict_proba(texts).argmax(1)]

    def latency_ms(self, texts: Sequence[Any], repeats: int = 3) -> float:
        """CPU milliseconds per example, one text at a time (best of ``repeats``)."""
        import time

        model, _, _ = self._parts()
        model.eval()
        encoded = [self.encode([t]) for t in texts]
        best = float("inf")
        with torch.no_grad():
            model(*encoded[0])
            for _ in range(repeats):
                start = time.perf_counter()
                for ids, mask in encoded:
                    model(ids, mask)
                best = min(best, (time.perf_counter() - start) / max(1, len(encoded)))
        return best * 1000.0
